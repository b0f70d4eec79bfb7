# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.machine.manager import DISK_ARGUMENT_SPEC, DiskBuilder
from ansible_collections.immutable.infra.plugins.plugin_utils.task.action import InfraAction


class ActionModule(InfraAction):
    argument_spec = DISK_ARGUMENT_SPEC
    manager = DiskBuilder
