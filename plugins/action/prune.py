# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.prune import PRUNE_ARGUMENT_SPEC, Prune, PruneContext

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        params = self.validate_argument_spec(PRUNE_ARGUMENT_SPEC)[1]
        context = PruneContext(basedir=self._loader.get_basedir(), check_mode=bool(self._task.check_mode))
        try:
            result.update(Prune(params, context, progress=display.display).run())
        except InfraError as error:
            result.update(failed=True, msg=error.message, **error.details)
        return result
