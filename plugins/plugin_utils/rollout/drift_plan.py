# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure decisions of a heal: the steps that replace a drifted host, and those that remove strays. Why a
host differs is its back-end's probe (for containers: engines/docker_drift.py); the Drift manager
(drift.py) observes and applies."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp


def plan_replacement(old: str, new: str, number: int) -> list[rp.Step]:
    """The fresh host joins before the drifted one drains and goes."""
    return [rp.Step(rp.START, (new,), number), rp.Step(rp.WAIT_HEALTHY, (new,), number),
            rp.Step(rp.ADD, (new,), number), rp.Step(rp.DRAIN, (old,), number),
            rp.Step(rp.WAIT_DRAINED, (old,), number), rp.Step(rp.DETACH, (old,), number),
            rp.Step(rp.REMOVE, (old,), number)]


def plan_stray_removals(remove: list[tuple[str, bool]]) -> list[rp.Step]:
    """Hosts that belong to no rollout are taken out of the balancer (when in it) and removed."""
    steps: list[rp.Step] = []
    for name, in_balancer in remove:
        if in_balancer:
            steps += [rp.Step(rp.DRAIN, (name,)), rp.Step(rp.WAIT_DRAINED, (name,)), rp.Step(rp.DETACH, (name,))]
        steps.append(rp.Step(rp.REMOVE, (name,)))
    return steps
