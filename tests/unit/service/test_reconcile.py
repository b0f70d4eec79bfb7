"""Reconcile's planner: re-register what the balancer lost, remove what died, leave kept generations alone."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.reconcile import live_generations, plan_repair
from ansible_collections.immutable.infra.plugins.plugin_utils.service.transaction import kept_replacements


def host(generation, index, running=True, state="ready"):
    return rp.Host(rp.host_name("web", generation, index), generation, index, "spec", running, state)


def test_a_healthy_world_needs_no_repair():
    observed = [host(2, 1), host(2, 2), host(1, 1, False, None), host(1, 2, False, None)]
    repair = plan_repair(observed, exited={"web-1-1", "web-1-2"})
    assert repair.steps == [] and repair.removed == []  # the kept generation stays for rollback


def test_after_an_engine_restart_the_running_hosts_are_registered_again_not_replaced():
    observed = [host(2, 1, True, None), host(2, 2, True, None), host(1, 1, False, None)]
    assert live_generations(observed) == {2}
    repair = plan_repair(observed, exited={"web-1-1"})
    assert repair.registered == ["web-2-1", "web-2-2"] and repair.removed == []
    assert repair.steps == [rp.Step(rp.WAIT_HEALTHY, ("web-2-1", "web-2-2")), rp.Step(rp.ADD, ("web-2-1", "web-2-2"))]


def test_a_killed_live_host_is_removed_so_the_plan_replaces_it():
    observed = [host(2, 1), host(2, 2, False, None), host(2, 3), host(1, 1, False, None)]
    repair = plan_repair(observed, exited={"web-2-2", "web-1-1"})
    assert repair.removed == ["web-2-2"] and repair.steps == [rp.Step(rp.REMOVE, ("web-2-2",))]


def test_a_created_container_is_not_taken_for_a_dead_one_and_nothing_at_all_is_fine():
    assert plan_repair([host(2, 1), host(2, 2, False, None)], exited=set()).steps == []
    assert plan_repair([], exited=set()).steps == []
    assert "had exited and were removed" in plan_repair([host(2, 1), host(2, 2, False, None)],
                                                        exited={"web-2-2"}).describe([])[0]


def test_an_interrupted_heal_is_undone_until_its_drifted_host_is_gone_and_kept_after():
    journal = {"previous_live": ["web-1-1", "web-1-2"], "new_hosts": ["web-1-3"], "replaced": {"web-1-1": "web-1-3"}}
    # killed before the drifted host was removed: the drifted host comes back, its replacement goes
    assert kept_replacements(journal, {"web-1-1", "web-1-2", "web-1-3"}) == (["web-1-1", "web-1-2"], ["web-1-3"])
    # killed after: the replacement is live in its place and stays
    assert kept_replacements(journal, {"web-1-2", "web-1-3"}) == (["web-1-3", "web-1-2"], [])
    # a rollout's journal has no replacements: undone as it is
    rollout = dict(journal, replaced={})
    assert kept_replacements(rollout, {"web-1-2", "web-1-3"}) == (["web-1-1", "web-1-2"], ["web-1-3"])
