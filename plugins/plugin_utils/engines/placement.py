# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which engine each host of a service runs on: a pure planner, no I/O.

Counts follow the engines' weights by the Sainte-Laguë (Webster) highest-averages method: even
by default, never more than an engine's max_hosts, and adding a host never takes one away from
another engine (no Alabama paradox), so scaling up moves nothing. Hosts are placed by slot (the
index in their name): a slot keeps the engine it had in the previous generation while that engine
still has room, so a rolling rollout replaces each host on the engine it ran on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp


@dataclass
class Placement:
    assignments: dict[str, str]  # slot -> engine name, in slot order
    counts: dict[str, int]  # engine name -> hosts, in declaration order (engines with none included)
    moved: list[str] = field(default_factory=list)  # slots whose engine differs from the previous one
    notes: list[str] = field(default_factory=list)

    def slots_on(self, engine: str) -> list[str]:
        return [slot for slot, name in self.assignments.items() if name == engine]

    def as_dict(self) -> dict:
        return {"assignments": dict(self.assignments), "counts": dict(self.counts), "moved": list(self.moved),
                "notes": list(self.notes)}


def _capacity(engine: Engine) -> float:
    if not engine.weight:
        return 0
    return float("inf") if engine.max_hosts is None else engine.max_hosts


def apportion(engines: Sequence[Engine], total: int) -> dict[str, int]:
    """How many of total hosts each engine gets: Sainte-Laguë by weight, within max_hosts; ties go
    to the engine declared first."""
    counts = {engine.name: 0 for engine in engines}
    for _seat in range(total):
        open_engines = [engine for engine in engines if counts[engine.name] < _capacity(engine)]
        if not open_engines:
            break
        chosen = max(open_engines, key=lambda engine: (engine.weight / (2 * counts[engine.name] + 1),
                                                       -engines.index(engine)))
        counts[chosen.name] += 1
    return counts


def plan_placement(engines: Sequence[Engine], slots: Sequence[str], previous: Mapping[str, str] | None = None,
                   down: Collection[str] = (), place_down_share: bool = False) -> Placement:
    """Places one host per slot on the engines.

    previous maps slots to the engine their host ran on before (hosts that keep their slot keep
    their engine where the counts allow). down names engines that cannot be reached: an error
    naming them, unless place_down_share puts their share on the others.
    """
    previous = previous or {}
    names = [engine.name for engine in engines]
    unknown_down = sorted(set(down) - set(names))
    if unknown_down:
        raise InfraError(f"Engine(s) {', '.join(unknown_down)} reported down are not in the fleet's engines.")
    notes = []
    down_names = [name for name in names if name in down]
    if down_names and not place_down_share:
        raise InfraError(f"Engine(s) {', '.join(down_names)} cannot be reached, so their hosts cannot be placed; "
                         "bring them back, take them out of engines, or set place_down_share: true to run their "
                         "share on the other engines.")
    usable = [engine for engine in engines if engine.name not in down_names]
    if down_names:
        notes.append(f"engine(s) {', '.join(down_names)} down: their share is placed on the others")
    capacity = sum(_capacity(engine) for engine in usable)
    if capacity < len(slots):
        limits = ", ".join(f"{engine.name} {engine.max_hosts if engine.weight else 0}" for engine in usable)
        raise InfraError(f"{len(slots)} hosts do not fit on the engines ({limits} at most"
                         f"{'; ' + ', '.join(down_names) + ' down' if down_names else ''}); raise max_hosts, "
                         "add an engine or run fewer replicas.")
    counts = apportion(usable, len(slots))
    counts.update({name: 0 for name in down_names})
    counts = {name: counts[name] for name in names}

    assignments: dict[str, str | None] = dict.fromkeys(slots)
    room = dict(counts)
    for slot in slots:  # slots that can stay where they were
        before = previous.get(slot)
        if before in room and room[before] > 0:
            assignments[slot] = before
            room[before] -= 1
    for slot in slots:  # the rest fill the remaining room, engines in declaration order
        if assignments[slot] is None:
            engine = next(name for name in names if room[name] > 0)
            assignments[slot] = engine
            room[engine] -= 1
    placed = {slot: engine for slot, engine in assignments.items() if engine is not None}
    moved = [slot for slot in slots if slot in previous and previous[slot] != placed[slot]]
    return Placement(placed, counts, moved, notes)


def host_slot(name: str) -> str:
    return str(rp.parse_host_name(name)[2])


def place_new_hosts(engines: Sequence[Engine], down: Collection[str], place_down_share: bool, plan: rp.Plan,
                    observed: Sequence[rp.Host]) -> tuple[dict[str, str], Placement | None]:
    """The engine of every host the plan starts: the engines kept hosts run on, and for new hosts the
    placement planner (each slot stays on the engine its live host ran on while that engine has room).
    Any back-end of several engines places its hosts this way."""
    engine_of = {host.name: host.engine for host in observed}
    existing = {name: engine_of[name] for name in plan.new_hosts if name in engine_of}
    fresh = [name for name in plan.new_hosts if name not in engine_of]
    if not fresh:
        return existing, None
    if len(engines) == 1:
        return dict(existing, **{name: engines[0].name for name in fresh}), None
    kept = [name for name in plan.live_after if name not in fresh]  # hosts that stay (a scale keeps its hosts)
    previous = {host_slot(name): engine_of[name] for name in plan.live_before if name in engine_of}
    previous.update({host_slot(name): engine_of[name] for name in kept if name in engine_of})
    slots = [host_slot(name) for name in [*kept, *fresh]]
    placement = plan_placement(engines, slots, previous, down, place_down_share)
    fresh_engines = {name: placement.assignments[host_slot(name)] for name in fresh}
    return dict(existing, **fresh_engines), placement
