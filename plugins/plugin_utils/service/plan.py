# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout planner: observed hosts + desired spec -> ordered steps. Pure; no I/O.

Capacity rules every plan keeps, batch after batch:
- at most ``replicas + max_surge`` hosts are in service at once (started, not yet out of the
  balancer; a retired host may still be exiting);
- at least ``replicas - max_unavailable`` healthy hosts stay in the balancer;
- an old host leaves the balancer only by drain -> no sessions -> removal, and is stopped only after.
Old hosts are stopped, never removed, until the whole rollout has succeeded, so a failure at any
step can put the previous generation back (see plan_revert).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

STRATEGIES = ("rolling", "blue_green", "canary")

# Step actions, in the words the plan and the progress output use.
START = "start"                   # create and start new hosts
START_STOPPED = "start_stopped"   # start hosts kept stopped (revert and rollback)
WAIT_HEALTHY = "wait_healthy"     # the service's health check passes healthy_threshold times
ADD = "add"                       # into the balancer, then wait until the balancer reports them up
OBSERVE = "observe"               # canary: keep checking health for a while before going on
DRAIN = "drain"                   # no new sessions for these hosts
WAIT_DRAINED = "wait_drained"     # their sessions reached zero
READY = "ready"                   # back from drain to ready
DETACH = "detach"                 # out of the balancer
STOP = "stop"                     # stopped, kept for rollback
REMOVE = "remove"                 # container removed


@dataclass(frozen=True)
class Host:
    """A host as observed: its container and its balancer membership."""

    name: str
    generation: int
    index: int
    spec_hash: str
    running: bool
    balancer_state: str | None = None   # ready / drain / maint, None when not in the balancer
    engine: str = "default"             # the engine it runs on

    @property
    def live(self) -> bool:
        return self.running and self.balancer_state == "ready"


@dataclass(frozen=True)
class Desired:
    service: str
    spec_hash: str
    replicas: int
    strategy: str = "rolling"
    batch_size: int = 1
    max_surge: int | None = None
    max_unavailable: int = 0
    canary_replicas: int = 1
    canary_seconds: float = 10.0
    keep_previous: int = 1


@dataclass(frozen=True)
class Step:
    action: str
    hosts: tuple[str, ...]
    batch: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        text = f"{self.action} {', '.join(self.hosts)}"
        if self.action == OBSERVE:
            text += f" for {self.seconds:g} s"
        return f"batch {self.batch}: {text}" if self.batch else text

    def as_dict(self) -> dict:
        return {"action": self.action, "hosts": list(self.hosts), "batch": self.batch, "text": self.describe()}


@dataclass
class Plan:
    kind: str                      # noop, rollout (a new generation), restore (a kept one), scale
    generation: int
    reason: str
    steps: list[Step] = field(default_factory=list)
    new_hosts: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    live_before: list[str] = field(default_factory=list)
    live_after: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def host_name(service: str, generation: int, index: int) -> str:
    return f"{service}-{generation}-{index}"


def parse_host_name(name: str) -> tuple[str, int, int]:
    """'web-api-3-2' -> ('web-api', 3, 2). Read from the right: a service name may hold '-' and digits,
    but generation and index are always the last two parts."""
    service, generation, index = name.rsplit("-", 2)
    return service, int(generation), int(index)


def effective_surge(desired: Desired) -> int:
    if desired.max_surge is not None:
        return desired.max_surge
    return desired.replicas if desired.strategy == "blue_green" else desired.batch_size


def validate(desired: Desired) -> None:
    """Refuses settings no plan can satisfy, before anything is observed or touched."""
    if desired.strategy not in STRATEGIES:
        raise InfraError(f"strategy '{desired.strategy}' is not one of {', '.join(STRATEGIES)}.")
    if desired.replicas < 1:
        raise InfraError(f"replicas must be at least 1 (got {desired.replicas}); to stop a service, "
                         "remove its hosts instead.")
    if desired.batch_size < 1:
        raise InfraError(f"batch_size must be at least 1 (got {desired.batch_size}).")
    surge = effective_surge(desired)
    if surge < 0 or desired.max_unavailable < 0:
        raise InfraError("max_surge and max_unavailable cannot be negative.")
    if desired.max_unavailable and desired.max_unavailable >= desired.replicas:
        raise InfraError(f"max_unavailable ({desired.max_unavailable}) must be below replicas "
                         f"({desired.replicas}) so the balancer always keeps a healthy host.")
    step = desired.replicas if desired.strategy == "blue_green" else max(desired.batch_size, 1)
    if desired.strategy == "canary":
        step = max(step, desired.canary_replicas)
    if surge + desired.max_unavailable < min(step, desired.replicas):
        raise InfraError(f"a batch of {min(step, desired.replicas)} host(s) needs max_surge + max_unavailable "
                         f">= {min(step, desired.replicas)} (got {surge} + {desired.max_unavailable}); raise "
                         "max_surge to add hosts before old ones leave, or max_unavailable to let capacity dip.")
    if desired.canary_replicas < 1:
        raise InfraError("canary_replicas must be at least 1.")
    if desired.keep_previous < 0:
        raise InfraError("keep_previous cannot be negative.")


def _order(hosts: list[Host]) -> list[Host]:
    return sorted(hosts, key=lambda host: (host.generation, host.index))


def _names(hosts: list[Host]) -> list[str]:
    return [host.name for host in hosts]


def _retire(hosts: list[str], batch: int) -> list[Step]:
    if not hosts:
        return []
    names = tuple(hosts)
    return [Step(DRAIN, names, batch), Step(WAIT_DRAINED, names, batch), Step(DETACH, names, batch),
            Step(STOP, names, batch)]


def _bring_in(hosts: list[str], batch: int, start: str = START) -> list[Step]:
    names = tuple(hosts)
    return [Step(start, names, batch), Step(WAIT_HEALTHY, names, batch), Step(ADD, names, batch)]


def _cleanup(observed: list[Host], live: list[Host]) -> list[Step]:
    """Steps for hosts that run or sit in the balancer without being live (an interrupted run, a hand-started
    container): out of the balancer and removed, before anything else happens."""
    live_names = set(_names(live))
    strays = [host for host in _order(observed) if host.name not in live_names and
              (host.running or host.balancer_state is not None)]
    steps: list[Step] = []
    in_balancer = tuple(host.name for host in strays if host.balancer_state is not None)
    if in_balancer:
        steps.append(Step(DETACH, in_balancer))
    if strays:
        steps.append(Step(REMOVE, tuple(_names(strays))))
    return steps


def _batches(new_names: list[str], old: list[str], desired: Desired) -> list[tuple[list[str], list[str]]]:
    """Pairs new hosts with the old hosts they replace, batch by batch."""
    if desired.strategy == "blue_green":
        return [(new_names, old)]
    sizes: list[int] = []
    remaining = len(new_names)
    if desired.strategy == "canary":
        sizes.append(min(desired.canary_replicas, remaining))
        remaining -= sizes[0]
    while remaining > 0:
        sizes.append(min(desired.batch_size, remaining))
        remaining -= sizes[-1]
    batches: list[tuple[list[str], list[str]]] = []
    start = 0
    for size in sizes:
        batches.append((new_names[start:start + size], old[start:start + size]))
        start += size
    if len(old) > start:  # fewer replicas than before: the rest of the old hosts leave with the last batch
        batches[-1] = (batches[-1][0], batches[-1][1] + old[start:])
    return batches


def _swap_batches(batches: list[tuple[list[str], list[str]]], running_before: int, desired: Desired,
                  start: str = START) -> list[Step]:
    """Steps for each (new, old) batch within the surge and unavailability bounds."""
    steps: list[Step] = []
    surge = effective_surge(desired)
    running = running_before
    for number, (new, old) in enumerate(batches, start=1):
        # Old hosts that must leave before the new ones start, to stay within replicas + max_surge.
        early = max(0, min(len(old), running + len(new) - (desired.replicas + surge)))
        steps += _retire(old[:early], number)
        steps += _bring_in(new, number, start)
        if desired.strategy == "canary" and number == 1:
            steps.append(Step(OBSERVE, tuple(new), number, desired.canary_seconds))
        steps += _retire(old[early:], number)
        running += len(new) - len(old)
    return steps


def plan_rollout(observed: list[Host], desired: Desired, recently_live: Sequence[int] = ()) -> Plan:
    """The steps that make `desired` live, from what runs now. recently_live: generations in the order
    they were last live, most recent first (from the ledger), which decides what retention keeps."""
    validate(desired)
    live = _order([host for host in observed if host.live])
    cleanup = _cleanup(observed, live)
    generations = [host.generation for host in observed]
    current = [host for host in live if host.spec_hash == desired.spec_hash]
    outdated = [host for host in live if host.spec_hash != desired.spec_hash]

    if not outdated and current:
        generation = max(host.generation for host in current)
        if len(current) == desired.replicas and not cleanup:
            return Plan("noop", generation, "the live hosts already run this image and spec",
                        live_before=_names(current), live_after=_names(current))
        return _plan_scale(observed, current, cleanup, generation, desired)

    old = _names(live)
    reason = (f"{len(outdated)} live host(s) run another image or spec" if live
              else "no host of this service is live")
    kept = _kept_generation(observed, desired)
    if kept:
        generation, new_names = kept
        steps = cleanup + _swap_batches(_batches(new_names, old, desired), len(live), desired, START_STOPPED)
        return Plan("restore", generation, f"{reason}; generation {generation} is kept stopped with this image "
                    "and spec, so its hosts are started again", steps=steps, new_hosts=new_names, retired=old,
                    live_before=old, live_after=new_names)
    generation = max(generations, default=0) + 1
    new_names = [host_name(desired.service, generation, index) for index in range(1, desired.replicas + 1)]
    steps = cleanup + _swap_batches(_batches(new_names, old, desired), len(live), desired)
    return Plan("rollout", generation, reason, steps=steps, new_hosts=new_names, retired=old,
                removed=_retention(observed, generation, desired, [host.generation for host in live],
                                   recently_live),
                live_before=old, live_after=new_names)


def _kept_generation(observed: list[Host], desired: Desired) -> tuple[int, list[str]] | None:
    """The newest generation kept stopped with the desired spec and enough hosts, and the hosts to start."""
    candidates: dict[int, list[Host]] = {}
    for host in observed:
        if host.spec_hash == desired.spec_hash and not host.running and host.balancer_state is None:
            candidates.setdefault(host.generation, []).append(host)
    for generation in sorted(candidates, reverse=True):
        if len(candidates[generation]) >= desired.replicas:
            return generation, _names(_order(candidates[generation])[:desired.replicas])
    return None


def _plan_scale(observed: list[Host], current: list[Host], cleanup: list[Step], generation: int,
                desired: Desired) -> Plan:
    """Same image and spec, different count (or strays to clean up): add or retire hosts in place."""
    live_names = _names(current)
    if len(current) < desired.replicas:
        next_index = max([host.index for host in observed if host.generation == generation], default=0) + 1
        added = [host_name(desired.service, generation, next_index + offset)
                 for offset in range(desired.replicas - len(current))]
        steps = list(cleanup)
        for number, start in enumerate(range(0, len(added), desired.batch_size), start=1):
            steps += _bring_in(added[start:start + desired.batch_size], number)
        return Plan("scale", generation, f"{len(added)} more host(s) needed", steps=steps, new_hosts=added,
                    live_before=live_names, live_after=live_names + added)
    extra = live_names[desired.replicas:]
    steps = list(cleanup) + _retire(extra, 1)
    if extra:
        steps.append(Step(REMOVE, tuple(extra), 1))
    reason = f"{len(extra)} host(s) too many" if extra else "stray hosts to clean up"
    return Plan("scale", generation, reason, steps=steps, retired=extra, removed=extra,
                live_before=live_names, live_after=live_names[:desired.replicas])


def _retention(observed: list[Host], new_generation: int, desired: Desired, live_now: list[int],
               recently_live: Sequence[int]) -> list[str]:
    """Hosts removed once the rollout succeeds: all but the keep_previous generations that were live most
    recently. The generation live now comes first, then the order of recently_live (a restore makes an
    old generation the most recent), then the newest numbers for generations no record names."""
    old_generations = {host.generation for host in observed if host.generation < new_generation}
    order = [*live_now, *recently_live]

    def recency(generation: int) -> tuple[int, int]:
        return (order.index(generation) if generation in order else len(order), -generation)

    kept = set(sorted(old_generations, key=recency)[:desired.keep_previous])
    return _names(_order([host for host in observed if host.generation not in kept and
                          host.generation < new_generation]))


def plan_revert(observed: list[Host], previous_live: list[str], new_hosts: list[str],
                keep_new: bool = False) -> list[Step]:
    """Steps that put the previous live hosts back and take the new hosts away.

    Used after a failed batch and to recover a rollout whose controller died. Previous hosts come
    back into the balancer before any new host leaves it, so capacity never dips below where the
    failed rollout left it. New hosts are removed, or only stopped when keep_new (they belong to
    a kept generation that was being restored).
    """
    by_name = {host.name: host for host in observed}
    previous = [by_name[name] for name in previous_live if name in by_name]
    stopped = tuple(host.name for host in previous if not host.running)
    outside = tuple(host.name for host in previous if host.running and host.balancer_state is None)
    draining = tuple(host.name for host in previous if host.running and host.balancer_state in ("drain", "maint"))
    new = _order([by_name[name] for name in new_hosts if name in by_name and name not in previous_live])
    steps: list[Step] = []
    if stopped:
        steps += [Step(START_STOPPED, stopped), Step(WAIT_HEALTHY, stopped), Step(ADD, stopped)]
    if outside:
        steps += [Step(WAIT_HEALTHY, outside), Step(ADD, outside)]
    if draining:
        steps.append(Step(READY, draining))
    in_balancer = tuple(host.name for host in new if host.balancer_state is not None)
    if in_balancer:
        steps += [Step(DRAIN, in_balancer), Step(WAIT_DRAINED, in_balancer), Step(DETACH, in_balancer)]
    if keep_new:
        running = tuple(host.name for host in new if host.running)
        if running:
            steps.append(Step(STOP, running))
    elif new:
        steps.append(Step(REMOVE, tuple(_names(new))))
    return steps
