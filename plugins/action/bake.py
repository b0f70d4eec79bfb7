# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible import constants as C
from ansible.release import __version__ as ansible_core_version

from ansible_collections.immutable.infra.plugins.plugin_utils.bake.manager import BAKE_ARGUMENT_SPEC, BakeContext, Baker
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.roles import default_collection_paths
from ansible_collections.immutable.infra.plugins.plugin_utils.core.action import InfraAction


class ActionModule(InfraAction):
    argument_spec = BAKE_ARGUMENT_SPEC

    def manage(self, params):
        context = BakeContext(
            basedir=params["project_dir"] or self.basedir, roles_path=list(C.DEFAULT_ROLES_PATH),
            collections_path=default_collection_paths(), play_collections=list(self._task.collections or []),
            check_mode=self.check_mode, ansible_core_version=ansible_core_version)
        return Baker(params, context, self.progress).run()
