# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shape every module of the collection shares on the controller: validate the arguments, run
one manager, and turn an expected failure (InfraError) into a failed result with its sentence."""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

display = Display()


class InfraAction(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    argument_spec: ClassVar[dict[str, Any]] = {}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        params = self.validate_argument_spec(self.argument_spec)[1]
        try:
            result.update(self.manage(params))
        except InfraError as error:
            result.update(failed=True, msg=error.message, **error.details)
        return result

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
