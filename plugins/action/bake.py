# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.bake.manager import BAKE_ARGUMENT_SPEC, Baker
from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction


class ActionModule(InfraAction):
    argument_spec = BAKE_ARGUMENT_SPEC
    manager = Baker
