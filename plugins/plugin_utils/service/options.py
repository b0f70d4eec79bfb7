# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of every module that changes a service's hosts (rollout, rollback, drift with heal):
how the swap drains, stops and locks. Documented once by the immutable.infra.swap doc fragment."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

SWAP_OPTIONS: dict[str, Any] = {
    "drain_timeout": {"type": "float", "default": 30},
    "stop_timeout": {"type": "int", "default": 10},
    "lock_timeout": {"type": "int", "default": 60},
}
# Far beyond any real use, low enough that no plan, sleep or timestamp overflows.
SWAP_LIMITS = {"drain_timeout": 86400, "stop_timeout": 3600, "lock_timeout": 7 * 86400}


def check_swap_options(params: dict[str, Any]) -> None:
    """drain_timeout and stop_timeout from 0, lock_timeout from 1 (a lease of 0 s would let any other
    controller take the lock at once), each within SWAP_LIMITS."""
    for name, limit in SWAP_LIMITS.items():
        value = params[name]
        lowest = 1 if name == "lock_timeout" else 0
        if not lowest <= value <= limit:
            raise InfraError(f"{name} is {value:g}; it must be between {lowest} and {limit} seconds.")
