"""The rollout planner, checked by replaying every plan against a model of hosts and balancer."""

from __future__ import annotations

import re

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp

OLD, NEW = "spec-old", "spec-new"


def live_hosts(count, generation=1, spec=OLD, service="web"):
    return [rp.Host(rp.host_name(service, generation, index), generation, index, spec, True, "ready")
            for index in range(1, count + 1)]


class Model:
    """Hosts and balancer membership, changed step by step, with the invariants checked after each."""

    def __init__(self, observed, desired):
        self.desired = desired
        self.running = {host.name for host in observed if host.running}
        self.balancer = {host.name: host.balancer_state for host in observed if host.balancer_state}
        self.healthy = set(self.running)
        self.exists = {host.name for host in observed}
        self.min_ready = len(self.ready())
        self.max_running = len(self.running)

    def ready(self):
        return {name for name, state in self.balancer.items() if state == "ready" and name in self.healthy}

    def apply(self, step):
        for name in step.hosts:
            if step.action in (rp.START, rp.START_STOPPED):
                assert name not in self.running
                self.running.add(name)
                self.exists.add(name)
            elif step.action == rp.WAIT_HEALTHY:
                assert name in self.running
                self.healthy.add(name)
            elif step.action == rp.ADD:
                assert name in self.healthy, f"{name} added before it was healthy"
                self.balancer[name] = "ready"
            elif step.action == rp.READY:
                self.balancer[name] = "ready"
            elif step.action == rp.DRAIN:
                assert self.balancer.get(name) == "ready"
                self.balancer[name] = "drain"
            elif step.action == rp.WAIT_DRAINED:
                assert self.balancer.get(name) == "drain"
            elif step.action == rp.DETACH:
                assert self.balancer.get(name) in ("drain", "maint", None) or name not in self.healthy, \
                    f"{name} detached without draining"
                self.balancer.pop(name, None)
            elif step.action == rp.STOP:
                assert name not in self.balancer, f"{name} stopped while in the balancer"
                self.running.discard(name)
                self.healthy.discard(name)
            elif step.action == rp.REMOVE:
                assert name not in self.balancer
                self.running.discard(name)
                self.healthy.discard(name)
                self.exists.discard(name)
        self.min_ready = min(self.min_ready, len(self.ready()))
        self.max_running = max(self.max_running, len(self.running))


def replay(observed, desired):
    plan = rp.plan_rollout(observed, desired)
    model = Model(observed, desired)
    for step in plan.steps:
        model.apply(step)
    return plan, model


STRATEGY_CASES = [
    (strategy, old, new, batch, surge, unavailable)
    for strategy in rp.STRATEGIES
    for old, new in [(1, 1), (3, 3), (5, 5), (3, 5), (5, 2), (4, 1)]
    for batch in (1, 2, 3)
    for surge, unavailable in [(None, 0), (0, 1), (1, 1), (0, 3), (2, 0)]
]


@pytest.mark.parametrize("strategy, old, new, batch, surge, unavailable", STRATEGY_CASES)
def test_every_plan_keeps_capacity_bounds_and_ends_on_the_new_generation(strategy, old, new, batch, surge,
                                                                         unavailable):
    desired = rp.Desired("web", NEW, new, strategy, batch, surge, unavailable, canary_seconds=1)
    try:
        plan, model = replay(live_hosts(old), desired)
    except InfraError as error:
        # The only refusals are settings that no plan can satisfy.
        step = new if strategy == "blue_green" else batch
        assert "needs max_surge + max_unavailable" in error.message or "must be below replicas" in error.message
        assert (rp.capacity(desired).surge + unavailable < min(step, new)) or unavailable >= new
        return
    surge_allowed = rp.capacity(desired).surge
    assert model.max_running <= max(old, new) + surge_allowed
    assert model.min_ready >= min(old, new) - unavailable
    assert model.ready() == set(plan.new_hosts) == set(plan.live_after)
    assert model.running == set(plan.new_hosts)  # old hosts are stopped ...
    assert model.exists >= {host.name for host in live_hosts(old)}  # ... but kept for rollback
    assert plan.new_hosts == [f"web-2-{index}" for index in range(1, new + 1)]


def test_default_rolling_never_drops_below_replicas():
    plan, model = replay(live_hosts(3), rp.Desired("web", NEW, 3))
    assert model.min_ready == 3 and model.max_running == 4
    assert [step.describe() for step in plan.steps[:7]] == [
        "batch 1: start web-2-1", "batch 1: wait_healthy web-2-1", "batch 1: add web-2-1",
        "batch 1: drain web-1-1", "batch 1: wait_drained web-1-1", "batch 1: detach web-1-1",
        "batch 1: stop web-1-1"]


def test_without_surge_old_hosts_leave_first():
    plan = rp.plan_rollout(live_hosts(2), rp.Desired("web", NEW, 2, max_surge=0, max_unavailable=1))
    assert [step.action for step in plan.steps[:5]] == [rp.DRAIN, rp.WAIT_DRAINED, rp.DETACH, rp.STOP, rp.START]


def test_blue_green_swaps_all_at_once():
    plan = rp.plan_rollout(live_hosts(3), rp.Desired("web", NEW, 3, "blue_green"))
    assert [step.action for step in plan.steps] == [rp.START, rp.WAIT_HEALTHY, rp.ADD, rp.DRAIN, rp.WAIT_DRAINED,
                                                    rp.DETACH, rp.STOP]
    assert plan.steps[0].hosts == ("web-2-1", "web-2-2", "web-2-3")


def test_canary_observes_the_first_host_before_going_on():
    plan = rp.plan_rollout(live_hosts(4), rp.Desired("web", NEW, 4, "canary", batch_size=3, canary_seconds=30))
    observe = [step for step in plan.steps if step.action == rp.OBSERVE]
    assert len(observe) == 1 and observe[0].hosts == ("web-2-1",) and observe[0].seconds == 30
    assert plan.steps.index(observe[0]) < min(index for index, step in enumerate(plan.steps)
                                              if step.action == rp.DRAIN)
    starts = [step.hosts for step in plan.steps if step.action == rp.START]
    assert starts == [("web-2-1",), ("web-2-2", "web-2-3", "web-2-4")]


def test_same_image_and_spec_is_a_noop():
    plan = rp.plan_rollout(live_hosts(3, spec=NEW), rp.Desired("web", NEW, 3))
    assert plan.kind == "noop" and not plan.changed and plan.live_after == ["web-1-1", "web-1-2", "web-1-3"]


def test_first_rollout_starts_generation_one():
    plan, model = replay([], rp.Desired("web", NEW, 2))
    assert plan.generation == 1 and model.ready() == {"web-1-1", "web-1-2"}
    assert plan.reason == "no host of this service is live"


def test_generation_numbers_count_kept_generations():
    stopped = [rp.Host("web-4-1", 4, 1, "x", False)]
    plan = rp.plan_rollout(live_hosts(1, generation=5) + stopped, rp.Desired("web", NEW, 1))
    assert plan.generation == 6


def test_scale_up_adds_hosts_in_the_same_generation():
    plan, model = replay(live_hosts(2, spec=NEW), rp.Desired("web", NEW, 4, batch_size=1))
    assert plan.kind == "scale" and plan.new_hosts == ["web-1-3", "web-1-4"]
    assert model.ready() == {"web-1-1", "web-1-2", "web-1-3", "web-1-4"}


def test_scale_down_retires_and_removes_the_extra_hosts():
    plan, model = replay(live_hosts(4, spec=NEW), rp.Desired("web", NEW, 2))
    assert plan.kind == "scale" and plan.removed == ["web-1-3", "web-1-4"]
    assert model.ready() == {"web-1-1", "web-1-2"} and model.exists == {"web-1-1", "web-1-2"}


def test_strays_are_cleaned_up_before_anything_else():
    stray_running = rp.Host("web-3-1", 3, 1, NEW, True, None)
    stray_server = rp.Host("web-3-2", 3, 2, NEW, False, "maint")
    plan, model = replay(live_hosts(2, generation=2, spec=NEW) + [stray_running, stray_server],
                         rp.Desired("web", NEW, 2))
    assert plan.kind == "scale" and plan.changed
    assert plan.steps[0] == rp.Step(rp.DETACH, ("web-3-2",))
    assert plan.steps[1] == rp.Step(rp.REMOVE, ("web-3-1", "web-3-2"))
    assert model.ready() == {"web-2-1", "web-2-2"}


def test_retention_keeps_the_newest_previous_generations():
    observed = live_hosts(2, generation=3) + [rp.Host("web-2-1", 2, 1, OLD, False), rp.Host("web-1-1", 1, 1, OLD, False)]
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 2, keep_previous=1)).removed == ["web-1-1", "web-2-1"]
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 2, keep_previous=2)).removed == ["web-1-1"]
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 2, keep_previous=3)).removed == []
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 2, keep_previous=0)).removed == [
        "web-1-1", "web-2-1", "web-3-1", "web-3-2"]


@pytest.mark.parametrize("failed_after", range(0, 30))
def test_revert_after_a_failure_at_any_step_restores_the_previous_generation(failed_after):
    """Stop a 3-host rolling rollout after any number of steps, then revert from what the model shows."""
    old = live_hosts(3)
    desired = rp.Desired("web", NEW, 3)
    plan = rp.plan_rollout(old, desired)
    model = Model(old, desired)
    for step in plan.steps[:failed_after]:
        model.apply(step)
    observed = [rp.Host(name, int(name.split("-")[1]), int(name.split("-")[2]), OLD, name in model.running,
                        model.balancer.get(name)) for name in sorted(model.exists)]
    ready_at_failure = len(model.ready())
    model.min_ready = ready_at_failure
    for step in rp.plan_revert(observed, [host.name for host in old], plan.new_hosts):
        model.apply(step)
    assert model.ready() == {"web-1-1", "web-1-2", "web-1-3"}
    assert model.exists == {"web-1-1", "web-1-2", "web-1-3"}
    assert model.min_ready >= min(ready_at_failure, 2)


def test_revert_sets_a_draining_host_ready_again():
    observed = [rp.Host("web-1-1", 1, 1, OLD, True, "drain"), rp.Host("web-2-1", 2, 1, NEW, True, "ready")]
    steps = rp.plan_revert(observed, ["web-1-1"], ["web-2-1"])
    assert [step.action for step in steps] == [rp.READY, rp.DRAIN, rp.WAIT_DRAINED, rp.DETACH, rp.REMOVE]


@pytest.mark.parametrize("change, message", [
    ({"replicas": 0}, "replicas must be at least 1"),
    ({"replicas": -2}, "replicas must be at least 1"),
    ({"strategy": "big_bang"}, "is not one of rolling, blue_green, canary"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"max_surge": 0, "max_unavailable": 0}, "needs max_surge + max_unavailable >= 1"),
    ({"max_unavailable": 3}, "must be below replicas"),
    ({"max_surge": -1}, "cannot be negative"),
    ({"keep_previous": -1}, "keep_previous cannot be negative"),
    ({"canary_replicas": 0, "strategy": "canary"}, "canary_replicas must be at least 1"),
])
def test_impossible_settings_are_refused(change, message):
    settings = dict(service="web", spec_hash=NEW, replicas=3)
    settings.update(change)
    with pytest.raises(InfraError, match=re.escape(message)):
        rp.plan_rollout(live_hosts(3), rp.Desired(**settings))


def test_steps_describe_themselves():
    step = rp.Step(rp.OBSERVE, ("web-2-1",), 1, 12)
    assert step.describe() == "batch 1: observe web-2-1 for 12 s"
    assert step.as_dict()["hosts"] == ["web-2-1"]


def test_revert_of_a_scale_up_keeps_the_hosts_that_were_live():
    observed = live_hosts(2, spec=NEW) + [rp.Host("web-1-3", 1, 3, NEW, True, "ready")]
    steps = rp.plan_revert(observed, ["web-1-1", "web-1-2"], ["web-1-3"])
    assert steps[-1] == rp.Step(rp.REMOVE, ("web-1-3",))
    assert all("web-1-1" not in step.hosts for step in steps)


def kept(count, generation, spec):
    return [rp.Host(rp.host_name("web", generation, index), generation, index, spec, False)
            for index in range(1, count + 1)]


def test_a_kept_generation_with_the_desired_spec_is_started_again_instead_of_new_hosts():
    observed = live_hosts(3, generation=3, spec=OLD) + kept(3, 2, NEW) + kept(3, 1, NEW)
    plan, model = replay(observed, rp.Desired("web", NEW, 3))
    assert plan.kind == "restore" and plan.generation == 2
    assert plan.new_hosts == ["web-2-1", "web-2-2", "web-2-3"] and plan.removed == []
    assert {step.action for step in plan.steps} >= {rp.START_STOPPED} and rp.START not in {
        step.action for step in plan.steps}
    assert model.ready() == set(plan.new_hosts) and model.min_ready == 3
    assert model.exists >= {"web-3-1", "web-3-2", "web-3-3", "web-1-1"}


def test_a_kept_generation_with_too_few_hosts_is_not_restored():
    observed = live_hosts(3, generation=3, spec=OLD) + kept(2, 2, NEW)
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 3)).kind == "rollout"


def test_reverting_a_restore_stops_the_restored_hosts_instead_of_removing_them():
    observed = [rp.Host("web-3-1", 3, 1, OLD, False), rp.Host("web-2-1", 2, 1, NEW, True, "ready")]
    steps = rp.plan_revert(observed, ["web-3-1"], ["web-2-1"], keep_new=True)
    assert [step.action for step in steps] == [rp.START_STOPPED, rp.WAIT_HEALTHY, rp.ADD, rp.DRAIN,
                                               rp.WAIT_DRAINED, rp.DETACH, rp.STOP]


def test_retention_after_a_restore_keeps_the_generation_that_was_live_before_the_rollout():
    # Generations 1, 2, 3 were rolled out, then generation 2 was restored; now a new image goes out.
    observed = live_hosts(2, generation=2) + kept(2, 3, OLD) + kept(2, 1, OLD)
    plan = rp.plan_rollout(observed, rp.Desired("web", NEW, 2, keep_previous=1), recently_live=[2, 3, 1])
    assert plan.generation == 4
    assert plan.removed == ["web-1-1", "web-1-2", "web-3-1", "web-3-2"]  # generation 2 stays for rollback


def test_retention_follows_the_order_generations_were_last_live_not_their_numbers():
    # 1, 2, 3 rolled out, 1 restored, then 2 restored: live now is 2, and 1 was live just before it.
    observed = live_hosts(1, generation=2) + kept(1, 3, OLD) + kept(1, 1, OLD)
    plan = rp.plan_rollout(observed, rp.Desired("web", NEW, 1, keep_previous=2), recently_live=[2, 1, 3])
    assert plan.removed == ["web-3-1"]
    # Without any record the newest numbers are kept, as before.
    assert rp.plan_rollout(observed, rp.Desired("web", NEW, 1, keep_previous=2)).removed == ["web-1-1"]
