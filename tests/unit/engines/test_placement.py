from __future__ import annotations

from collections import Counter

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.placement import apportion, plan_placement


def engines(*specs):
    """engines(("a", 1, None), ...) -> Engine list (name, weight, max_hosts)."""
    return [Engine(name, f"unix:///{name}.sock", weight=weight, max_hosts=maximum) for name, weight, maximum in specs]


EVEN = engines(("a", 1, None), ("b", 1, None), ("c", 1, None))
SLOTS = [str(index) for index in range(1, 8)]


def test_even_spread_by_default_first_engines_take_the_remainder():
    placement = plan_placement(EVEN, SLOTS)
    assert placement.counts == {"a": 3, "b": 2, "c": 2}
    assert list(placement.assignments) == SLOTS
    assert Counter(placement.assignments.values()) == placement.counts
    assert placement.moved == [] and placement.notes == []


def test_weights_and_maximum():
    assert apportion(engines(("a", 2, None), ("b", 1, None)), 9) == {"a": 6, "b": 3}
    assert apportion(engines(("a", 1, 2), ("b", 1, None), ("c", 1, None)), 10) == {"a": 2, "b": 4, "c": 4}
    assert apportion(engines(("a", 0, None), ("b", 1, None)), 3) == {"a": 0, "b": 3}


def test_more_replicas_never_take_a_host_away_from_an_engine():
    fleet = engines(("a", 3, None), ("b", 2, None), ("c", 1, 4))
    before = apportion(fleet, 0)
    for total in range(1, 60):
        after = apportion(fleet, total)
        assert all(after[name] >= before[name] for name in after), total
        assert sum(after.values()) == total
        before = after


def test_a_rollout_keeps_each_slot_on_its_engine():
    first = plan_placement(EVEN, SLOTS)
    again = plan_placement(EVEN, SLOTS, previous=first.assignments)
    assert again.assignments == first.assignments and again.moved == []


def test_slots_stay_where_they_were_even_if_placed_differently_before():
    previous = {"1": "c", "2": "c", "3": "b", "4": "a"}
    placement = plan_placement(EVEN, ["1", "2", "3", "4"], previous=previous)
    assert placement.counts == {"a": 2, "b": 1, "c": 1}
    assert placement.assignments["1"] == "c" and placement.assignments["3"] == "b" and placement.assignments["4"] == "a"
    assert placement.moved == ["2"] and placement.assignments["2"] == "a"


def test_scaling_up_moves_nothing_and_scaling_down_keeps_the_rest():
    three = plan_placement(EVEN, ["1", "2", "3"])
    six = plan_placement(EVEN, [str(index) for index in range(1, 7)], previous=three.assignments)
    assert six.moved == [] and all(six.assignments[slot] == three.assignments[slot] for slot in three.assignments)
    two = plan_placement(EVEN, ["1", "2"], previous=six.assignments)
    assert two.moved == []


def test_an_engine_that_is_down_is_an_error_naming_it():
    with pytest.raises(InfraError, match=r"Engine\(s\) b cannot be reached.*place_down_share: true"):
        plan_placement(EVEN, SLOTS, down={"b"})


def test_opt_in_places_a_down_engines_share_on_the_others():
    first = plan_placement(EVEN, SLOTS)
    placement = plan_placement(EVEN, SLOTS, previous=first.assignments, down={"b"}, place_down_share=True)
    assert placement.counts == {"a": 4, "b": 0, "c": 3}
    assert sorted(placement.moved) == sorted(first.slots_on("b"))
    assert all(placement.assignments[slot] == first.assignments[slot] for slot in first.slots_on("a") + first.slots_on("c"))
    assert placement.notes == ["engine(s) b down: their share is placed on the others"]


def test_hosts_that_do_not_fit_are_refused_with_the_limits():
    with pytest.raises(InfraError, match=r"5 hosts do not fit on the engines \(a 2, b 2 at most\)"):
        plan_placement(engines(("a", 1, 2), ("b", 1, 2)), ["1", "2", "3", "4", "5"])
    with pytest.raises(InfraError, match="b down"):
        plan_placement(engines(("a", 1, 2), ("b", 1, 2)), ["1", "2", "3"], down={"b"}, place_down_share=True)


def test_unknown_down_engine_is_refused():
    with pytest.raises(InfraError, match="not in the fleet"):
        plan_placement(EVEN, SLOTS, down={"z"}, place_down_share=True)


def test_no_slots_places_nothing():
    placement = plan_placement(EVEN, [])
    assert placement.assignments == {} and placement.counts == {"a": 0, "b": 0, "c": 0}
