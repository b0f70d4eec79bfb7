# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every module of the collection shares on the controller: validate the arguments (the
module's own and the shared ones), build the task's context, run one manager, and turn an expected
failure (InfraError) into a failed result with its sentence."""

from __future__ import annotations

from typing import Any, ClassVar

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.release import __version__ as ansible_core_version
from ansible.utils.collection_loader import AnsibleCollectionConfig
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import hold_signals_for_workers, note_progress
from ansible_collections.immutable.infra.plugins.plugin_utils.core.options import check_text, one_sentence, secret_values
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import Manager, TaskContext, task_argument_spec

display = Display()
# ansible-playbook loads action plugins in its own process too (to see what they need): there, Ctrl-C and
# SIGTERM are made to wait for the workers still putting things back (see core/interrupts.py).
hold_signals_for_workers(display.warning)


class InfraAction(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    argument_spec: ClassVar[dict[str, Any]] = {}
    """The module's own options; the shared ones (SHARED_OPTIONS) are added to them."""
    manager: ClassVar[type[Manager]]

    @classmethod
    def task_argument_spec(cls) -> dict[str, Any]:
        return task_argument_spec(cls.argument_spec)

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        spec = self.task_argument_spec()
        secrets: set[str] = set()
        try:
            params = validated_params(self, spec)
            secrets = secret_values(params, spec)
            result.update(self.manage(params, self.task_context(task_vars or {})))
        except InfraError as error:
            result.update(failed=True, msg=error.message, **error.details)
        return remove_values(result, secrets) if secrets else result

    def manager_for(self, params: dict[str, Any]) -> type[Manager]:
        """The manager that does the work these params ask for."""
        return self.manager

    def manage(self, params: dict[str, Any], context: TaskContext) -> dict[str, Any]:
        """Does the module's work; returns its result. The task's engine connections end with it."""
        manager = self.manager_for(params)(params, context)
        try:
            return manager.run()
        finally:
            manager.close()

    def task_context(self, task_vars: dict[str, Any]) -> TaskContext:
        # basedir is the playbook's directory: where roles/ and the git checkout for provenance are.
        return TaskContext(
            basedir=self._loader.get_basedir(), check_mode=bool(self._task.check_mode), diff_mode=bool(self._task.diff),
            roles_path=list(C.DEFAULT_ROLES_PATH), collections_path=list(AnsibleCollectionConfig.collection_paths),
            play_collections=list(self._task.collections or []), ansible_core_version=ansible_core_version,
            progress=self.progress, inventory={"groups": task_vars.get("groups") or {},
                                               "hostvars": task_vars.get("hostvars") or {}})

    @staticmethod
    def progress(message: str) -> None:
        display.display(message)
        note_progress(message)


def validated_params(action: ActionBase, argument_spec: dict[str, Any]) -> dict[str, Any]:
    """The task's options checked against the spec, and for text too long or with control characters;
    every refusal is an InfraError of one sentence."""
    module = action._task.resolved_action or action._task.action
    try:
        params = action.validate_argument_spec(argument_spec)[1]
    except AnsibleActionFail as error:
        raise InfraError(one_sentence(error.message, module)) from None
    check_text(params, argument_spec)
    return params
