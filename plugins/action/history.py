# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.history import HISTORY_ARGUMENT_SPEC, History


class ActionModule(InfraAction):
    argument_spec = HISTORY_ARGUMENT_SPEC
    manager = History

    def manage(self, params, context):
        result = super().manage(params, context)
        self.progress("\n".join(result["table"]))
        return result
