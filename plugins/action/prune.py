# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.core.action import InfraAction
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.prune import (
    PRUNE_ARGUMENT_SPEC,
    Prune,
    PruneContext,
)


class ActionModule(InfraAction):
    argument_spec = PRUNE_ARGUMENT_SPEC

    def manage(self, params):
        return Prune(params, PruneContext(self.basedir, self.check_mode), self.progress).run()
