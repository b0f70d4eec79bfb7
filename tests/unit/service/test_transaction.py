"""The one transaction over the seam: rollouts, reverts, recovery, reconcile and heals applied to an
in-memory back-end, store and balancer (memory_backend.py). Pure logic: no Docker, no network."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
from memory_backend import MemoryBackend, MemoryBalancer

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable, InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift_plan import plan_replacement
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.manager import retire_old_generations
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import unfinished_work
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.steps import STARTS_PER_MACHINE, HostSteps
from ansible_collections.immutable.infra.plugins.plugin_utils.service.transaction import Change, Transaction

HEALTH = {"command": ["check"], "timeout": 0.3, "interval": 0.01, "healthy_threshold": 1}


def spec(version: str) -> HostSpec:
    return HostSpec("web", f"sha256:{version * 64}"[:71], 8000, {}, HEALTH)


class World:
    """One service's back-end, balancer and ledger, and a way to run changes through transactions."""

    def __init__(self, tmp_path, engines=("one",)) -> None:
        self.backend = MemoryBackend("web", list(engines))
        self.balancer = MemoryBalancer()
        self.ledger = Ledger(str(tmp_path / "ledger.jsonl"))
        self.lines: list[str] = []

    def transaction(self, version: str) -> Transaction:
        steps = HostSteps(self.backend, self.balancer, spec(version), self.backend.store(), self.lines.append)
        return Transaction(steps, self.backend.store(), self.ledger, None, 60, f"r-{version}")

    def rollout(self, version: str, replicas: int = 3, batch_size: int = 1, keep_previous: int = 1) -> rp.Plan:
        """As rollout/manager.py runs one; the warning of its retention, if any, in self.warning."""
        tx = self.transaction(version)
        self.warning = None
        try:
            with tx.locked():
                tx.recover()
                tx.reconcile()
                observation = tx.observe()
                plan = rp.plan_rollout(observation.hosts, rp.Desired("web", spec(version).spec_hash, replicas,
                                                                     batch_size=batch_size, keep_previous=keep_previous))
                if plan.changed:
                    tx.steps.placement = self.backend.place(plan, observation.hosts).engines
                    tx.record = self.ledger.new_record("rollout", None, service="web", generation=plan.generation)
                    tx.apply(Change(f"Rollout of web to generation {plan.generation}", "rollout",
                                    f"gen {plan.generation}", plan.steps, observation.records, plan.live_before,
                                    plan.new_hosts, plan.live_after, generation=plan.generation))
                    tx.succeed(added=plan.new_hosts, live=plan.live_after)
                    _left, self.warning = retire_old_generations(tx, plan)
                return plan
        finally:
            tx.steps.close()

    def results(self) -> list[str]:
        return [record.get("result") for record in self.ledger.records(kind="rollout")]


def test_a_first_rollout_makes_every_host_live_and_in_the_balancer(tmp_path):
    world = World(tmp_path)
    plan = world.rollout("a")
    assert plan.live_after == ["web-1-1", "web-1-2", "web-1-3"]
    assert world.backend.live_hosts() == plan.live_after == world.balancer.ready()
    assert world.results() == ["succeeded"]
    assert not unfinished_work(world.backend.store(), "web")


def test_a_rolling_rollout_keeps_the_old_generation_stopped_and_the_balancer_on_the_new(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    plan = world.rollout("b", batch_size=2)
    assert world.backend.live_hosts() == plan.live_after == ["web-2-1", "web-2-2", "web-2-3"]
    assert world.balancer.ready() == plan.live_after
    assert sorted(name for name, host in world.backend.hosts_.items() if not host.running) == plan.live_before
    assert world.rollout("b").changed is False  # the same spec again: nothing to do


def test_old_hosts_that_cannot_be_removed_leave_the_rollout_live_and_the_next_run_does_not_undo_it(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    world.rollout("b")
    removing = world.backend.remove

    def busy(record):
        raise InfraError(f"Docker could not remove container {record.name}: device or resource busy")
    world.backend.remove = busy
    plan = world.rollout("c", keep_previous=0)
    assert world.warning.startswith("generation 3 of web is live, but web-1-1, web-1-2, web-1-3, web-2-1, web-2-2, "
                                    "web-2-3 beyond keep_previous could not be removed (Docker could not remove")
    assert world.results() == ["succeeded"] * 3 and world.balancer.ready() == plan.live_after
    world.backend.remove = removing
    world.lines.clear()
    assert world.rollout("c", keep_previous=0).changed is False
    assert not any("did not finish" in line for line in world.lines), world.lines
    assert world.balancer.ready() == world.backend.live_hosts() == plan.live_after


def test_a_failed_health_gate_reverts_to_the_previous_hosts_and_says_so(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    world.backend.unhealthy = {"web-2-2"}
    with pytest.raises(InfraError) as failed:
        world.rollout("b")
    assert failed.value.message.startswith("Rollout of web to generation 2 failed and was rolled back: host web-2-2")
    assert failed.value.details["rolled_back"] and failed.value.details["live"] == ["web-1-1", "web-1-2", "web-1-3"]
    assert world.backend.live_hosts() == world.balancer.ready() == ["web-1-1", "web-1-2", "web-1-3"]
    assert not any(name.startswith("web-2-") for name in world.backend.hosts_)
    assert world.results() == ["succeeded", "rolled back"]
    assert not unfinished_work(world.backend.store(), "web")


def test_a_ledger_that_cannot_take_the_failure_record_does_not_hide_that_the_change_was_rolled_back(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    world.backend.unhealthy = {"web-2-2"}

    def full(record):
        raise InfraError(f"Cannot write to the ledger {world.ledger.path}: No space left on device.")
    world.ledger.append = full
    with pytest.raises(InfraError) as failed:
        world.rollout("b")
    assert failed.value.message.startswith("Rollout of web to generation 2 failed and was rolled back: host web-2-2")
    assert failed.value.message.endswith("The ledger did not take this run's record: Cannot write to the ledger "
                                         f"{world.ledger.path}: No space left on device.")
    assert world.backend.live_hosts() == ["web-1-1", "web-1-2", "web-1-3"] and failed.value.details["rolled_back"]


def test_a_change_whose_controller_died_is_undone_by_the_next_transaction(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    tx = world.transaction("b")
    with tx.locked():
        observation = tx.observe()
        plan = rp.plan_rollout(observation.hosts, rp.Desired("web", spec("b").spec_hash, 3))
        tx.journal.write(tx.rollout_id, plan.live_before, plan.new_hosts, spec("b").image_id)
        tx.steps.apply(plan.steps[:7], observation.records, "gen 2")  # cut short, as by a SIGKILL
    tx.steps.close()
    assert "web-2-1" in world.balancer.ready() and "web-1-1" not in world.balancer.ready()
    world.lines.clear()
    world.rollout("a")
    assert any("did not finish; putting web-1-1, web-1-2, web-1-3 back first" in line for line in world.lines)
    assert world.backend.live_hosts() == world.balancer.ready() == ["web-1-1", "web-1-2", "web-1-3"]
    assert not unfinished_work(world.backend.store(), "web")


def test_reconcile_takes_out_stale_servers_and_puts_lost_ones_back(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    world.balancer.register("web-9-9", "10.9.9.9", 8000)  # a server at no host
    del world.balancer.servers["web-1-2"]  # a balancer that lost a live host's server
    tx = world.transaction("a")
    try:
        with tx.locked():
            repaired = tx.reconcile()
    finally:
        tx.steps.close()
    assert repaired == {"detached": ["web-9-9"], "registered": ["web-1-2"], "removed": []}
    assert world.balancer.ready() == ["web-1-1", "web-1-2", "web-1-3"]
    assert [record["kind"] for record in world.ledger.records()][-1] == "reconcile"


def test_a_heal_replaces_one_host_and_a_failed_one_is_undone(tmp_path):
    world = World(tmp_path)
    world.rollout("a")
    tx = world.transaction("a")
    try:
        with tx.locked():
            observation = tx.observe()
            tx.steps.placement["web-1-4"] = "one"
            tx.apply(Change("Replacing drifted host web-1-2", "heal", "heal", plan_replacement("web-1-2", "web-1-4", 1),
                            observation.records, observation.live(), ["web-1-4"], replaced={"web-1-2": "web-1-4"}))
            observation = tx.observe()
            world.backend.unhealthy = {"web-1-5"}
            tx.steps.placement["web-1-5"] = "one"
            with pytest.raises(InfraError) as failed:
                tx.apply(Change("Replacing drifted host web-1-3", "heal", "heal",
                                plan_replacement("web-1-3", "web-1-5", 1), observation.records, observation.live(),
                                ["web-1-5"], replaced={"web-1-3": "web-1-5"}, failed_result="failed"))
    finally:
        tx.steps.close()
    assert "Replacing drifted host web-1-3 failed and was rolled back" in failed.value.message
    assert world.backend.live_hosts() == world.balancer.ready() == ["web-1-1", "web-1-3", "web-1-4"]


def test_an_engine_lost_mid_change_reverts_the_others_and_leaves_the_journal(tmp_path):
    world = World(tmp_path, engines=("one", "two"))
    world.rollout("a", replicas=4)
    original = world.backend.start

    def start_then_lose_two(host):
        original(host)
        if host.name == "web-2-2":
            world.backend.lost_engines.add("two")
    world.backend.start = start_then_lose_two  # type: ignore[method-assign]
    with pytest.raises(InfraError) as failed:
        world.rollout("b", replicas=4, batch_size=2)
    assert "engine two stopped answering" in failed.value.message and failed.value.details["journal_left"]
    assert [name for name in world.balancer.ready() if world.backend.hosts_[name].engine == "one"] == \
        ["web-1-2", "web-1-4"]
    assert world.backend.store().get("immutable-infra-rollout-web") is not None


def test_a_connection_lost_mid_change_to_an_engine_that_answers_again_reverts_the_change_in_the_same_run(tmp_path):
    world = World(tmp_path)
    world.rollout("a", replicas=3)
    original = world.backend.start

    def start_losing_the_connection_once(host):
        if host.name == "web-2-2":
            raise EngineUnreachable("the Docker engine at ssh://one stopped answering (ConnectionError)", engine="one")
        original(host)
    world.backend.start = start_losing_the_connection_once  # type: ignore[method-assign]
    with pytest.raises(InfraError) as failed:
        world.rollout("b", replicas=3)
    assert failed.value.details["rolled_back"] and not failed.value.details.get("journal_left")
    assert "answers again on a new connection" in "\n".join(world.lines)
    assert world.backend.live_hosts() == world.balancer.ready() == ["web-1-1", "web-1-2", "web-1-3"]
    assert world.backend.store().get("immutable-infra-rollout-web") is None


def test_a_lock_held_by_a_living_controller_is_refused(tmp_path):
    world = World(tmp_path)
    first, second = world.transaction("a"), world.transaction("b")
    with first.locked(), pytest.raises(InfraError, match="Another rollout of service web is in progress"):
        second.lock.acquire()
    first.steps.close()
    second.steps.close()


class MeetingBackend(MemoryBackend):
    """Each start waits until a start is under way on every engine: it passes only when every engine's
    share of a batch is started at the same time, and fails (a broken barrier) when they go one by one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.meeting = threading.Barrier(len(self.engines), timeout=10)

    def start(self, host) -> None:
        self.meeting.wait()
        super().start(host)


def test_each_engine_starts_its_share_of_a_batch_at_the_same_time_as_the_others(tmp_path):
    world = World(tmp_path, engines=("one", "two"))
    world.backend = MeetingBackend("web", ["one", "two"])
    world.rollout("a", replicas=4, batch_size=2)
    plan = world.rollout("b", replicas=4, batch_size=2)
    assert world.backend.live_hosts() == plan.live_after == world.balancer.ready()
    assert not world.backend.meeting.broken


def test_the_balancer_gets_each_batch_s_hosts_in_one_exchange(tmp_path):
    world = World(tmp_path, engines=("one", "two"))
    world.rollout("a", replicas=4, batch_size=2)
    world.balancer.exchanges.clear()
    world.rollout("b", replicas=4, batch_size=2)
    calls = [call for call, _count in world.balancer.exchanges]
    assert calls.count("activate_all") == 2 and calls.count("set_states") == 2 and calls.count("detach_all") == 2
    assert all(count == 2 for call, count in world.balancer.exchanges if call != "register_all")
    assert sum(count for call, count in world.balancer.exchanges if call == "register_all") == 4


class CrowdedBackend(MemoryBackend):
    """Notes how many starts are under way at once; a start waits until `together` are, so it passes
    only when that many hosts of a batch start together."""

    def __init__(self, *args, together: int = STARTS_PER_MACHINE, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crowd = threading.Barrier(together, timeout=10)
        self.under_way = self.most_at_once = 0
        self.counting = threading.Lock()

    def start(self, host) -> None:
        with self.counting:
            self.under_way += 1
            self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            self.crowd.wait()
            super().start(host)
        finally:
            with self.counting:
                self.under_way -= 1


def crowded_rollouts(tmp_path, backend: CrowdedBackend) -> None:
    world = World(tmp_path)
    world.backend = backend
    world.rollout("a", replicas=8, batch_size=8)
    plan = world.rollout("b", replicas=8, batch_size=8)
    assert world.backend.live_hosts() == plan.live_after == world.balancer.ready()


def test_an_engine_starts_a_few_hosts_of_a_batch_at_once_and_never_more(tmp_path):
    backend = CrowdedBackend("web", ["one"])
    crowded_rollouts(tmp_path, backend)
    assert backend.most_at_once == STARTS_PER_MACHINE and not backend.crowd.broken


def test_engines_on_one_machine_share_its_starts_and_engines_on_two_do_not(tmp_path):
    shared = CrowdedBackend("web", ["one", "two"], machines={"one": "", "two": ""})
    crowded_rollouts(tmp_path / "shared", shared)
    assert shared.most_at_once == STARTS_PER_MACHINE and not shared.crowd.broken
    apart = CrowdedBackend("web", ["one", "two"], together=2 * STARTS_PER_MACHINE)
    crowded_rollouts(tmp_path / "apart", apart)
    assert apart.most_at_once == 2 * STARTS_PER_MACHINE and not apart.crowd.broken


@dataclass
class FailingStartBackend(MemoryBackend):
    """The start of web-2-1 fails; every start begun is noted."""

    begun: list[str] = field(default_factory=list)

    def start(self, host) -> None:
        self.begun.append(host.name)
        if host.name == "web-2-1":
            raise InfraError("the engine refused to start web-2-1")
        time.sleep(0.05)
        super().start(host)


def test_after_a_failed_start_an_engine_begins_no_other_host_and_the_change_is_reverted(tmp_path):
    world = World(tmp_path)
    world.backend = FailingStartBackend("web", ["one"])
    world.rollout("a", replicas=8, batch_size=8)
    with pytest.raises(InfraError, match="refused to start web-2-1"):
        world.rollout("b", replicas=8, batch_size=8)
    begun = [name for name in world.backend.begun if name.startswith("web-2-")]
    assert "web-2-1" in begun and len(begun) <= STARTS_PER_MACHINE
    assert world.backend.live_hosts() == world.balancer.ready() == [f"web-1-{index}" for index in range(1, 9)]
