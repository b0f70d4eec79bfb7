# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from typing import Any, ClassVar

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.machine.verify import DISK_VERIFY_OPTIONS, DiskVerifier
from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import VERIFY_ARGUMENT_SPEC, Verifier


class ActionModule(InfraAction):
    # A verify proves an image in a container, or a disk built from it in a VM (machine/verify.py).
    argument_spec: ClassVar[dict[str, Any]] = dict(
        VERIFY_ARGUMENT_SPEC, image=dict(VERIFY_ARGUMENT_SPEC["image"], required=False), **DISK_VERIFY_OPTIONS)
    manager = Verifier

    def manager_for(self, params):
        if params["disk"]:
            return DiskVerifier
        if not params["image"]:
            raise InfraError("Give the image to verify (image), or a disk built by immutable.infra.disk (disk).")
        return Verifier
