# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout planner: observed hosts + desired spec -> ordered steps. Pure; no I/O.

Capacity rules every plan keeps, batch after batch (capacity.py turns percentages into hosts):
- at most ``replicas + max_surge`` hosts are in service at once (started, not yet out of the
  balancer; a retired host may still be exiting);
- at least ``replicas - max_unavailable`` healthy hosts stay in the balancer;
- an old host leaves the balancer only by drain -> no sessions -> removal, and is stopped only after.
Old hosts are stopped, never removed, until the whole rollout has succeeded, so a failure at any
step can put the previous generation back (see plan_revert). Over several engines every batch takes
its hosts from every engine in turn (capacity.interleave).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.service.capacity import (
    Amount,
    check_amount,
    interleave,
    resolve,
    shares_of,
)

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
    batch_size: int | None = None  # None: max_surge + max_unavailable when max_surge is given, else 1
    max_surge: Amount | None = None
    max_unavailable: Amount = 0
    canary_replicas: int = 1
    canary_seconds: float = 10.0
    keep_previous: int = 1


@dataclass(frozen=True)
class Capacity:
    """What max_surge, max_unavailable and batch_size come to in hosts, for one placement."""

    surge: int
    unavailable: int
    batch: int

    def as_dict(self) -> dict[str, int]:
        return {"max_surge": self.surge, "max_unavailable": self.unavailable, "batch_size": self.batch}


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
    capacity: Capacity | None = None

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


def capacity(desired: Desired, shares: Sequence[int] = ()) -> Capacity:
    """Surge, unavailability and batch size in hosts. shares: the new generation's hosts per engine
    (percentages are taken per engine); all replicas on one engine by default. Without batch_size, a
    batch is as large as max_surge + max_unavailable allow when max_surge is given, else one host.
    Percentages that both come to 0 allow a surge of 1 (a rollout must be able to move)."""
    shares = list(shares) or [desired.replicas]
    unavailable = resolve("max_unavailable", desired.max_unavailable, shares, round_up=False)
    if desired.max_surge is not None:
        surge = resolve("max_surge", desired.max_surge, shares, round_up=True)
        percentages = isinstance(desired.max_surge, str) or isinstance(desired.max_unavailable, str)
        if percentages and surge + unavailable == 0:
            surge = 1
    else:
        surge = desired.replicas if desired.strategy == "blue_green" else (desired.batch_size or 1)
    if desired.strategy == "blue_green":
        batch = desired.replicas
    elif desired.batch_size:
        batch = desired.batch_size
    else:
        batch = max(1, surge + unavailable) if desired.max_surge is not None else 1
    return Capacity(surge, unavailable, batch)


def validate(desired: Desired, shares: Sequence[int] = ()) -> Capacity:
    """Refuses settings no plan can satisfy, before anything is observed or touched; what they come to."""
    if desired.strategy not in STRATEGIES:
        raise InfraError(f"strategy '{desired.strategy}' is not one of {', '.join(STRATEGIES)}.")
    if desired.replicas < 1:
        raise InfraError(f"replicas must be at least 1 (got {desired.replicas}); to stop a service, "
                         "remove its hosts instead.")
    if desired.batch_size is not None and desired.batch_size < 1:
        raise InfraError(f"batch_size must be at least 1 (got {desired.batch_size}).")
    if desired.max_surge is not None:
        check_amount("max_surge", desired.max_surge)
    check_amount("max_unavailable", desired.max_unavailable)
    allowed = capacity(desired, shares)
    if allowed.unavailable and allowed.unavailable >= desired.replicas:
        hosts = "" if isinstance(desired.max_unavailable, int) else f", {allowed.unavailable} host(s)"
        raise InfraError(f"max_unavailable ({desired.max_unavailable}{hosts}) must be below replicas "
                         f"({desired.replicas}) so the balancer always keeps a healthy host.")
    step = desired.replicas if desired.strategy == "blue_green" else allowed.batch
    if desired.strategy == "canary":
        step = max(step, desired.canary_replicas)
    if allowed.surge + allowed.unavailable < min(step, desired.replicas):
        raise InfraError(f"a batch of {min(step, desired.replicas)} host(s) needs max_surge + max_unavailable "
                         f">= {min(step, desired.replicas)} (got {allowed.surge} + {allowed.unavailable}); raise "
                         "max_surge to add hosts before old ones leave, or max_unavailable to let capacity dip.")
    if desired.canary_replicas < 1:
        raise InfraError("canary_replicas must be at least 1.")
    if desired.keep_previous < 0:
        raise InfraError("keep_previous cannot be negative.")
    return allowed


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


def _engine_map(observed: list[Host], new_names: list[str], old: list[str],
                placement: Mapping[str, str] | None) -> dict[str, str]:
    """The engine of each new host: where placement puts it, else where it is (a kept host), else where
    the old host it replaces runs (a slot keeps its engine)."""
    engine_of = {host.name: host.engine for host in observed}
    partners = dict(zip(new_names, old, strict=False))
    return {name: (placement or {}).get(name) or engine_of.get(name) or engine_of.get(partners.get(name, ""), "")
            for name in new_names}


def _batch_sizes(count: int, desired: Desired, allowed: Capacity) -> list[int]:
    sizes: list[int] = []
    remaining = count
    if desired.strategy == "canary":
        sizes.append(min(desired.canary_replicas, remaining))
        remaining -= sizes[0]
    while remaining > 0:
        sizes.append(min(allowed.batch, remaining))
        remaining -= sizes[-1]
    return sizes


def _batches(new_names: list[str], old: list[str], desired: Desired, allowed: Capacity,
             engines: Mapping[str, str]) -> list[tuple[list[str], list[str]]]:
    """Pairs new hosts with the old hosts they replace (by position), batch by batch, every batch taking
    its hosts from every engine in turn."""
    if desired.strategy == "blue_green":
        return [(new_names, old)]
    partners = dict(zip(new_names, old, strict=False))
    ordered = interleave(new_names, engines)
    batches: list[tuple[list[str], list[str]]] = []
    start = 0
    for size in _batch_sizes(len(new_names), desired, allowed):
        chunk = ordered[start:start + size]
        batches.append((chunk, [partners[name] for name in chunk if name in partners]))
        start += size
    if len(old) > len(new_names):  # fewer replicas than before: the rest of the old hosts leave with the last batch
        batches[-1] = (batches[-1][0], batches[-1][1] + old[len(new_names):])
    return batches


def _swap_batches(batches: list[tuple[list[str], list[str]]], running_before: int, desired: Desired,
                  allowed: Capacity, start: str = START) -> list[Step]:
    """Steps for each (new, old) batch within the surge and unavailability bounds."""
    steps: list[Step] = []
    surge = allowed.surge
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


def plan_rollout(observed: list[Host], desired: Desired, recently_live: Sequence[int] = (),
                 placement: Mapping[str, str] | None = None) -> Plan:
    """The steps that make `desired` live, from what runs now. recently_live: generations in the order
    they were last live, most recent first (from the ledger), which decides what retention keeps.
    placement: the engine of each new host, once placed (see capacity.py for what it changes)."""
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
        return _plan_scale(observed, current, cleanup, generation, desired, placement)

    old = _names(live)
    reason = (f"{len(outdated)} live host(s) run another image or spec" if live
              else "no host of this service is live")
    kept = _kept_generation(observed, desired)
    if kept:
        generation, new_names = kept
        engines = _engine_map(observed, new_names, old, placement)
        allowed = validate(desired, shares_of(new_names, engines))
        steps = cleanup + _swap_batches(_batches(new_names, old, desired, allowed, engines), len(live), desired,
                                        allowed, START_STOPPED)
        return Plan("restore", generation, f"{reason}; generation {generation} is kept stopped with this image "
                    "and spec, so its hosts are started again", steps=steps, new_hosts=new_names, retired=old,
                    live_before=old, live_after=new_names, capacity=allowed)
    generation = max(generations, default=0) + 1
    new_names = [host_name(desired.service, generation, index) for index in range(1, desired.replicas + 1)]
    engines = _engine_map(observed, new_names, old, placement)
    allowed = validate(desired, shares_of(new_names, engines))
    steps = cleanup + _swap_batches(_batches(new_names, old, desired, allowed, engines), len(live), desired, allowed)
    return Plan("rollout", generation, reason, steps=steps, new_hosts=new_names, retired=old,
                removed=_retention(observed, generation, desired, [host.generation for host in live],
                                   recently_live),
                live_before=old, live_after=new_names, capacity=allowed)


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
                desired: Desired, placement: Mapping[str, str] | None) -> Plan:
    """Same image and spec, different count (or strays to clean up): add or retire hosts in place."""
    live_names = _names(current)
    if len(current) < desired.replicas:
        next_index = max([host.index for host in observed if host.generation == generation], default=0) + 1
        added = [host_name(desired.service, generation, next_index + offset)
                 for offset in range(desired.replicas - len(current))]
        engines = _engine_map(observed, added, [], placement)
        allowed = capacity(desired, shares_of(added, engines))
        ordered = interleave(added, engines)
        steps = list(cleanup)
        for number, start in enumerate(range(0, len(ordered), allowed.batch), start=1):
            steps += _bring_in(ordered[start:start + allowed.batch], number)
        return Plan("scale", generation, f"{len(added)} more host(s) needed", steps=steps, new_hosts=added,
                    live_before=live_names, live_after=live_names + added, capacity=allowed)
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
