# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every module of the collection shares on the controller: validate the arguments, run
one manager, and turn an expected failure (InfraError) into a failed result with its sentence."""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.options import check_text, one_sentence

display = Display()


class InfraAction(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    argument_spec: ClassVar[dict[str, Any]] = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            params = self.validated_params(self.argument_spec)
            result.update(self.manage(params))
        except InfraError as error:
            result.update(failed=True, msg=error.message, **error.details)
        return result

    def validated_params(self, argument_spec: dict[str, Any]) -> dict[str, Any]:
        """The task's options checked against the spec, and for text too long or with control characters;
        every refusal is an InfraError of one sentence."""
        return validated_params(self, argument_spec)

    def manage(self, params: dict[str, Any]) -> dict[str, Any]:
        """Does the module's work; returns its result."""
        raise NotImplementedError

    @property
    def basedir(self) -> str:
        """The playbook's directory: where roles/ and the git checkout for provenance are."""
        return self._loader.get_basedir()

    @property
    def check_mode(self) -> bool:
        return bool(self._task.check_mode)

    @property
    def diff_mode(self) -> bool:
        return bool(self._task.diff)

    @staticmethod
    def progress(message: str) -> None:
        display.display(message)


def validated_params(action: ActionBase, argument_spec: dict[str, Any]) -> dict[str, Any]:
    module = action._task.resolved_action or action._task.action
    try:
        params = action.validate_argument_spec(argument_spec)[1]
    except AnsibleActionFail as error:
        raise InfraError(one_sentence(error.message, module)) from None
    check_text(params, argument_spec)
    return params
