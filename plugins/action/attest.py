# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.report import ATTEST_ARGUMENT_SPEC, Attest
from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction


class ActionModule(InfraAction):
    argument_spec = ATTEST_ARGUMENT_SPEC
    manager = Attest
