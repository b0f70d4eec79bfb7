# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reconcile: repair what the world changed behind the collection's back, before anything else runs.

An engine restart gives containers new addresses (the balancer then points at swapped or dead
ones), a host can be killed (`docker kill`: the restart policy leaves it down), a balancer reload
without a server-state file forgets the dynamic servers. Planning from such a world would replace
healthy hosts, or count a dead one as kept. So every rollout, rollback and heal, once it holds the
lock and has undone an interrupted run, first: takes out servers that point at no running host,
puts running hosts of the live generation that the balancer lost back in (after their health gate),
and removes the exited hosts of the live generation, so the plan then replaces them. Pure planner
here; ServiceHosts applies the steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp


@dataclass
class Repair:
    steps: list[rp.Step] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)   # running hosts put back into the balancer
    removed: list[str] = field(default_factory=list)      # exited hosts of the live generation

    def describe(self, detached: list[str]) -> list[str]:
        return ([f"servers {', '.join(detached)} pointed at no running host and were taken out"] if detached else []) \
            + ([f"{', '.join(self.registered)} ran outside the balancer and were put back"] if self.registered else []) \
            + ([f"{', '.join(self.removed)} had exited and were removed"] if self.removed else [])


def problems(repair: Repair, stale_servers: list[str]) -> list[str]:
    """What does not match, in the present tense, for a report that changes nothing (drift without heal)."""
    return ([f"balancer server {server} points at no running host" for server in stale_servers]
            + [f"{name} runs but is not in the balancer" for name in repair.registered]
            + [f"{name} of the live generation has exited" for name in repair.removed])


def live_generations(observed: list[rp.Host]) -> set[int]:
    """The generations serving now; when the balancer lost all of them (an engine restart), the newest one
    with running hosts, since old generations are kept stopped."""
    serving = {host.generation for host in observed if host.live}
    if serving:
        return serving
    running = [host.generation for host in observed if host.running]
    return {max(running)} if running else set()


def plan_repair(observed: list[rp.Host], exited: set[str]) -> Repair:
    """Steps that make the balancer match the live generation's hosts again. exited: hosts whose container
    exited or died (not merely created)."""
    generations = live_generations(observed)
    members = sorted((host for host in observed if host.generation in generations),
                     key=lambda host: (host.generation, host.index))
    outside = tuple(host.name for host in members if host.running and host.balancer_state is None)
    dead = tuple(host.name for host in members if not host.running and host.name in exited)
    repair = Repair(registered=list(outside), removed=list(dead))
    if outside:
        repair.steps += [rp.Step(rp.WAIT_HEALTHY, outside), rp.Step(rp.ADD, outside)]
    if dead:
        repair.steps.append(rp.Step(rp.REMOVE, dead))
    return repair
