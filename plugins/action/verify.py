# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from typing import Any, ClassVar

from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import VERIFY_ARGUMENT_SPEC, Verifier


class ActionModule(InfraAction):
    argument_spec: ClassVar[dict[str, Any]] = VERIFY_ARGUMENT_SPEC
    manager = Verifier
