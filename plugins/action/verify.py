# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import default_collection_paths
from ansible_collections.immutable.infra.plugins.plugin_utils.core.action import validated_params
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import (
    VERIFY_ARGUMENT_SPEC,
    Verifier,
    VerifyContext,
)

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        context = VerifyContext(
            basedir=self._loader.get_basedir(), roles_path=list(C.DEFAULT_ROLES_PATH),
            collections_path=default_collection_paths(), play_collections=list(self._task.collections or []),
            check_mode=bool(self._task.check_mode))
        try:
            params = validated_params(self, VERIFY_ARGUMENT_SPEC)
            result.update(Verifier(params, context, progress=display.display).run())
        except InfraError as error:
            result.update(failed=True, msg=error.message, **error.details)
        return result
