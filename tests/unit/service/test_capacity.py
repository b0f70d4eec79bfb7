"""Batch size by capacity: max_surge and max_unavailable as counts or percentages, taken per engine, and
batches that take their hosts from every engine in turn."""

from __future__ import annotations

import re

import pytest
from test_rollout_plan import NEW, OLD, Model

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.service import capacity
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp


def spread(count, engines, generation=1, spec=OLD):
    """Live hosts with slot i on engine i mod len(engines), as placement puts a fresh service."""
    return [rp.Host(rp.host_name("web", generation, index), generation, index, spec, True, "ready",
                    engines[(index - 1) % len(engines)]) for index in range(1, count + 1)]


def blocks(count, engines, generation=1, spec=OLD):
    """Live hosts in blocks: the first share on the first engine, the next on the second..."""
    per = -(-count // len(engines))
    return [rp.Host(rp.host_name("web", generation, index), generation, index, spec, True, "ready",
                    engines[(index - 1) // per]) for index in range(1, count + 1)]


@pytest.mark.parametrize("value, expected", [
    (2, 2), ("3", 3), ("25%", "25%"), (" 50 % ", "50%"), ("12.5%", "12.5%"), ("0%", "0%"), ("100%", "100%"), (0, 0),
])
def test_amounts_are_counts_or_percentages(value, expected):
    assert capacity.check_amount("max_surge", value) == expected


@pytest.mark.parametrize("value", [-1, "-1", "101%", "a lot", "25 percent", True, None, [2]])
def test_other_amounts_are_refused_with_what_is_taken(value):
    with pytest.raises(InfraError, match=re.escape("must be a number of hosts (such as 2) or a percentage")
                       if value != -1 else "cannot be negative"):
        capacity.check_amount("max_surge", value)


@pytest.mark.parametrize("value, shares, round_up, expected", [
    ("25%", [10], True, 3),          # as Kubernetes rounds a surge: up
    ("25%", [10], False, 2),         # and unavailability: down
    ("25%", [3, 3, 2, 2], True, 4),  # per engine: one host on each of four engines
    ("25%", [5, 5], True, 4),
    ("25%", [25, 25, 25, 25], True, 28),
    ("25%", [25, 25, 25, 25], False, 24),
    ("30%", [10], True, 3),          # no floating-point 3.0000000000000004 rounded up to 4
    ("100%", [7, 3], True, 10),
    ("0%", [7, 3], True, 0),
    (4, [7, 3], True, 4),            # a count is a count, whatever the engines
])
def test_percentages_are_taken_of_each_engines_share(value, shares, round_up, expected):
    assert capacity.resolve("max_surge", value, shares, round_up) == expected


def test_interleave_takes_every_engine_in_turn_in_proportion():
    engine_of = {"a1": "a", "a2": "a", "a3": "a", "a4": "a", "b1": "b", "b2": "b"}
    assert capacity.interleave(["a1", "a2", "a3", "a4", "b1", "b2"], engine_of) == ["a1", "b1", "a2", "a3", "b2", "a4"]
    assert capacity.interleave(["x", "y"], {}) == ["x", "y"]
    assert capacity.shares_of(["a1", "b1", "a2"], engine_of) == [2, 1]


def test_without_max_surge_batches_stay_one_host_and_capacity_never_dips():
    allowed = rp.capacity(rp.Desired("web", NEW, 10))
    assert allowed == rp.Capacity(surge=1, unavailable=0, batch=1)
    assert rp.capacity(rp.Desired("web", NEW, 10, max_unavailable=2)) == rp.Capacity(1, 2, 1)
    assert rp.capacity(rp.Desired("web", NEW, 10, batch_size=3)) == rp.Capacity(3, 0, 3)


def test_without_batch_size_a_batch_is_what_surge_and_unavailability_allow():
    assert rp.capacity(rp.Desired("web", NEW, 10, max_surge="25%")) == rp.Capacity(3, 0, 3)
    assert rp.capacity(rp.Desired("web", NEW, 10, max_surge="25%", max_unavailable="25%")) == rp.Capacity(3, 2, 5)
    assert rp.capacity(rp.Desired("web", NEW, 10, max_surge=2, max_unavailable=1)) == rp.Capacity(2, 1, 3)
    # percentages that round to nothing still let the rollout move, one host above replicas
    assert rp.capacity(rp.Desired("web", NEW, 3, max_surge="0%", max_unavailable="10%")) == rp.Capacity(1, 0, 1)


def replay(observed, desired, placement=None):
    plan = rp.plan_rollout(observed, desired, placement=placement)
    model = Model(observed, desired)
    for step in plan.steps:
        model.apply(step)
    return plan, model


def batches_by_engine(plan, engine_of):
    """Per batch: how many new hosts each engine starts."""
    counts = {}
    for step in plan.steps:
        if step.action == rp.START:
            for name in step.hosts:
                engine = engine_of[name]
                counts.setdefault(step.batch, {}).setdefault(engine, 0)
                counts[step.batch][engine] += 1
    return [counts[batch] for batch in sorted(counts)]


@pytest.mark.parametrize("layout", [spread, blocks])
def test_every_batch_takes_an_equal_share_from_every_engine(layout):
    engines = ["e1", "e2", "e3", "e4"]
    observed = layout(100, engines)
    placement = {rp.host_name("web", 2, host.index): host.engine for host in observed}  # a slot keeps its engine
    plan, model = replay(observed, rp.Desired("web", NEW, 100, max_surge="25%"), placement)
    assert plan.capacity == rp.Capacity(surge=28, unavailable=0, batch=28)
    assert batches_by_engine(plan, placement) == [dict.fromkeys(engines, 7)] * 3 + [dict.fromkeys(engines, 4)]
    assert model.max_running <= 100 + 28 and model.min_ready == 100
    assert model.ready() == set(plan.new_hosts)


def test_a_batch_replaces_each_new_host_s_own_predecessor():
    observed = blocks(6, ["e1", "e2"])
    placement = {rp.host_name("web", 2, host.index): host.engine for host in observed}
    plan = rp.plan_rollout(observed, rp.Desired("web", NEW, 6, batch_size=2), placement=placement)
    pairs = [(start.hosts, stop.hosts) for start in plan.steps if start.action == rp.START
             for stop in plan.steps if stop.action == rp.STOP and stop.batch == start.batch]
    assert pairs == [(("web-2-1", "web-2-4"), ("web-1-1", "web-1-4")),
                     (("web-2-2", "web-2-5"), ("web-1-2", "web-1-5")),
                     (("web-2-3", "web-2-6"), ("web-1-3", "web-1-6"))]


def test_a_first_rollout_is_interleaved_by_its_placement():
    placement = {f"web-1-{index}": ("e1" if index <= 5 else "e2") for index in range(1, 11)}
    plan = rp.plan_rollout([], rp.Desired("web", NEW, 10, max_surge="20%"), placement=placement)
    assert plan.capacity.batch == 2
    assert batches_by_engine(plan, placement) == [{"e1": 1, "e2": 1}] * 5


@pytest.mark.parametrize("surge, unavailable", [("25%", 0), ("25%", "25%"), ("50%", "10%"), (0, "30%"), ("100%", 0),
                                                (3, "20%"), ("10%", 1)])
@pytest.mark.parametrize("count, engines", [(10, 1), (10, 4), (7, 2), (12, 3)])
def test_percentages_keep_the_capacity_bounds(surge, unavailable, count, engines):
    names = [f"e{number}" for number in range(1, engines + 1)]
    observed = spread(count, names)
    placement = {rp.host_name("web", 2, host.index): host.engine for host in observed}
    desired = rp.Desired("web", NEW, count, max_surge=surge, max_unavailable=unavailable)
    plan, model = replay(observed, desired, placement)
    shares = capacity.shares_of(plan.new_hosts, placement)
    allowed = rp.capacity(desired, shares)
    assert plan.capacity == allowed
    assert model.max_running <= count + allowed.surge
    assert model.min_ready >= count - allowed.unavailable
    assert model.ready() == set(plan.new_hosts)


@pytest.mark.parametrize("change, message", [
    ({"max_surge": "150%"}, "max_surge must be a number of hosts"),
    ({"max_unavailable": "all"}, "max_unavailable must be a number of hosts"),
    ({"max_unavailable": "100%"}, "max_unavailable (100%, 3 host(s)) must be below replicas (3)"),
    ({"max_surge": "0%", "max_unavailable": 0, "batch_size": 2}, "needs max_surge + max_unavailable >= 2"),
])
def test_impossible_percentages_are_refused(change, message):
    with pytest.raises(InfraError, match=re.escape(message)):
        rp.plan_rollout(spread(3, ["e1"]), rp.Desired(**dict(dict(service="web", spec_hash=NEW, replicas=3), **change)))
