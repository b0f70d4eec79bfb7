"""The service lock's decisions: who holds it, when it may be taken over, and that it is never removed blindly."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, parse_rfc3339
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.service import lock as service_lock
from ansible_collections.immutable.infra.plugins.plugin_utils.service.lock import (
    Holder,
    ServiceLock,
    holder_of,
    takeover_reason,
)

T0 = parse_rfc3339("2026-12-01T10:00:00Z")


def test_engine_times_with_nanoseconds_and_offsets():
    assert parse_rfc3339("2026-12-01T10:00:00.5Z") == T0 + 0.5
    assert parse_rfc3339("2026-12-01T10:00:00.123456789Z") == pytest.approx(T0 + 0.123456789)
    assert parse_rfc3339("2026-12-01T11:00:00+01:00") == T0
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def lock_container(created="2026-12-01T10:00:00.000Z", **labels):
    base = {"immutable.infra.lock_token": "tok", "immutable.infra.owner": "ops", "immutable.infra.controller": "ci-1",
            "immutable.infra.pid": "4242", "immutable.infra.pid_start": "777", "immutable.infra.rollout": "r1",
            "immutable.infra.started": "2026-12-01T10:00:00Z", "immutable.infra.lease_seconds": "60"}
    base.update(labels)
    return {"Id": "c" * 64, "Created": created, "Config": {"Labels": {k: v for k, v in base.items() if v is not None}}}


def lease(created, token="tok"):
    return {"Name": f"lease-{created}", "CreatedAt": created, "Labels": {"immutable.infra.lock_token": token}}


def as_marker(inspected):
    """A lock container as the Docker store reads it."""
    store = DockerStore(FakeEngine({"lock": inspected}), "sha256:img")
    return store.marker("lock")


def as_leases(*volumes):
    engine = FakeEngine()
    engine.volumes = {volume["Name"]: volume for volume in volumes}
    return DockerStore(engine, "sha256:img").find("immutable.infra.lease", "web")


def test_the_newest_renewal_of_this_lock_counts_and_other_locks_leases_do_not():
    holder = holder_of(as_marker(lock_container()), as_leases(
        lease("2026-12-01T10:00:30Z"), lease("2026-12-01T10:00:20Z"), lease("2026-12-01T10:05:00Z", token="someone-else")))
    assert holder is not None and holder.last_renewal == T0 + 30
    assert holder.describe() == "rollout r1 by ops@ci-1, pid 4242, started 2026-12-01T10:00:00Z"


def test_a_lock_without_its_labels_has_no_readable_holder():
    assert holder_of(as_marker(lock_container(**{"immutable.infra.owner": None})), []) is None
    assert holder_of(as_marker({"Id": "x", "Created": "2026-12-01T10:00:00Z", "Config": {"Labels": None}}), []) is None
    assert holder_of(as_marker(lock_container(created="not a time")), []) is None


def holder(controller="ci-1", pid=4242, pid_start="777", last_renewal=T0, lease_seconds=60.0):
    return Holder("c" * 64, "tok", "ops", controller, pid, pid_start, "r1", "2026-12-01T10:00:00Z", lease_seconds,
                  last_renewal)


def test_a_renewed_lease_of_a_living_holder_is_never_taken_over():
    assert takeover_reason(holder(), T0 + 59, "ci-1", lambda pid: "777") is None
    assert takeover_reason(holder(controller="ci-2"), T0 + 59, "ci-1", lambda pid: None) is None


def test_a_lapsed_lease_is_taken_over():
    assert "last renewed 62 s ago" in takeover_reason(holder(controller="ci-2"), T0 + 62, "ci-1")


def test_a_dead_or_reused_pid_on_this_controller_is_proof_the_holder_is_gone():
    assert "process 4242 on this controller is gone" in takeover_reason(holder(), T0 + 1, "ci-1", lambda pid: None)
    assert "is gone" in takeover_reason(holder(), T0 + 1, "ci-1", lambda pid: "999")  # pid reused by another process


def test_another_controllers_pid_says_nothing():
    assert takeover_reason(holder(controller="ci-2"), T0 + 1, "ci-1", lambda pid: None) is None


class FakeEngine:
    """The few calls the lock makes, over a dict of containers; scripted inspect results per call."""

    where = "unix:///fake.sock"

    def __init__(self, existing=None, inspect_script=(), now=T0 + 1):
        self.containers = dict(existing or {})
        self.inspect_script = list(inspect_script)
        self.removed: list[str] = []
        self.volumes: dict[str, dict] = {}
        self.now = now

    def create_marker(self, name, image, labels):
        if name in self.containers:
            return None
        self.containers[name] = {"Id": "mine", "Created": "2026-12-01T10:00:01Z", "Config": {"Labels": labels}}
        return "mine"

    def container(self, name):
        if self.inspect_script:
            return self.inspect_script.pop(0)
        return self.containers.get(name)

    def remove_container(self, container_id):
        self.removed.append(container_id)
        for name, inspected in list(self.containers.items()):
            if inspected["Id"] == container_id:
                del self.containers[name]

    def volumes_matching(self, label, value):
        return list(self.volumes.values())

    def create_volume(self, name, labels):
        self.volumes[name] = {"Name": name, "Labels": labels, "CreatedAt": "2026-12-01T10:00:02Z"}

    def remove_volume(self, name):
        self.volumes.pop(name, None)

    def engine_time(self):
        return self.now


def make_lock(engine, progress=None):
    return ServiceLock(DockerStore(engine, "sha256:img"), "web", "r2", 60, ([] if progress is None else progress).append)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(service_lock, "UNREADABLE_RETRY_SECONDS", 0.3)
    monkeypatch.setattr(service_lock.time, "sleep", lambda seconds: None)


def test_a_lock_that_cannot_be_read_yet_is_read_again_and_never_removed():
    taken = lock_container(**{"immutable.infra.controller": "ci-2"})
    engine = FakeEngine({"immutable-infra-lock-web": taken}, inspect_script=[None, None, taken])
    with pytest.raises(InfraError) as refused:
        make_lock(engine).acquire()
    assert "rollout r1 by ops@ci-2, pid 4242" in refused.value.message
    assert not engine.removed


def test_a_lock_that_stays_unreadable_is_refused_without_removing_it():
    engine = FakeEngine({"immutable-infra-lock-web": lock_container()})
    engine.container = lambda name: None
    with pytest.raises(InfraError) as refused:
        make_lock(engine).acquire()
    assert "could not be read" in refused.value.message and "None" not in refused.value.message
    assert not engine.removed


def test_a_lock_released_while_read_is_simply_taken():
    engine = FakeEngine({}, inspect_script=[])
    engine.containers["immutable-infra-lock-web"] = lock_container()
    original = engine.container

    def released_meanwhile(name):
        engine.containers.pop(name, None)
        return original(name)
    engine.container = released_meanwhile
    lock = make_lock(engine)
    lock.acquire()
    try:
        assert lock.held and not engine.removed
    finally:
        lock.release()


def test_a_stale_lock_is_removed_by_its_id_and_taken():
    dead = lock_container(**{"immutable.infra.controller": socket.gethostname(), "immutable.infra.pid": "999999999"})
    engine = FakeEngine({"immutable-infra-lock-web": dead})
    progress: list[str] = []
    lock = make_lock(engine, progress)
    lock.acquire()
    try:
        assert engine.removed == ["c" * 64] and lock.marker_id == "mine"
        assert "process 999999999 on this controller is gone" in progress[0]
    finally:
        lock.release()
    assert engine.removed[-1] == "mine" and "immutable-infra-lock-web" not in engine.containers


def test_a_lock_taken_by_a_third_controller_during_a_takeover_is_refused_not_removed():
    dead = lock_container(**{"immutable.infra.controller": "ci-2"}, created="2026-12-01T09:00:00Z")
    third = lock_container(**{"immutable.infra.controller": "ci-3", "immutable.infra.rollout": "r3"})
    third["Id"] = "t" * 64
    engine = FakeEngine({"immutable-infra-lock-web": dead}, inspect_script=[dead, third])
    real_remove = engine.remove_container

    def remove_then_someone_takes_it(container_id):
        real_remove(container_id)
        engine.containers["immutable-infra-lock-web"] = third
    engine.remove_container = remove_then_someone_takes_it
    with pytest.raises(InfraError) as refused:
        make_lock(engine).acquire()
    assert "rollout r3 by ops@ci-3" in refused.value.message
    assert engine.removed == ["c" * 64]  # the dead one only, by its ID


def test_renewal_adds_a_lease_and_drops_the_previous_one_and_notices_a_takeover():
    engine = FakeEngine()
    engine.create_volume("immutable-infra-lease-web-old-3", {"immutable.infra.lock_token": "old"})
    lock = make_lock(engine)
    lock.acquire()
    try:
        assert not engine.volumes  # a lease of a lock removed by hand goes when the lock is taken again
        lock.renew()
        lock.renew()
        assert list(engine.volumes) == [f"immutable-infra-lease-web-{lock.token}-2"]
        engine.containers["immutable-infra-lock-web"] = lock_container(**{"immutable.infra.controller": "ci-9"})
        with pytest.raises(service_lock.LockLost) as lost:
            lock.renew()
        assert "taken over by rollout r1 by ops@ci-9" in lost.value.message
    finally:
        lock.release()
    assert "c" * 64 not in engine.removed  # the new holder's lock stays


def test_process_start_of_this_process_and_of_none():
    import os
    start = service_lock.process_start(os.getpid())
    assert start is not None and start == service_lock.process_start(os.getpid())
    assert service_lock.process_start(999_999_999) is None


def test_while_the_lock_cannot_be_renewed_a_drain_may_wait_only_what_leaves_room_for_the_next_steps(monkeypatch):
    lock = make_lock(FakeEngine())
    now = [1000.0]
    monkeypatch.setattr(service_lock.time, "monotonic", lambda: now[0])
    lock._renewed_at = 1000.0  # renewed just now: 60 s of lease
    assert lock.wait_allowance() == 60 - 2 * service_lock.LEASE_MARGIN
    lock.check_lease()  # a step may start
    now[0] += 52  # 8 s left: a step may still start, but a drain may not wait at all
    assert lock.wait_allowance() == 0.0
    lock.check_lease()
    now[0] += 4  # 4 s left: no step starts
    with pytest.raises(service_lock.LockLost, match="runs out in 4 s and cannot be renewed"):
        lock.check_lease()


def test_a_lease_that_ran_out_while_its_renewal_hung_stops_the_run(monkeypatch):
    lock = make_lock(FakeEngine())
    now = [1000.0]
    monkeypatch.setattr(service_lock.time, "monotonic", lambda: now[0])
    lock.marker_id, lock._renewed_at = "mine", 1000.0  # held, renewed just now; the renewer is stuck in a call
    now[0] += 59
    lock.check()
    now[0] += 2
    with pytest.raises(service_lock.LockLost, match=r"the lease of the lock of service web ran out 1 s ago while its "
                                                    r"renewal got no answer"):
        lock.check()


def test_a_renewal_that_fails_with_an_unexpected_error_is_tried_again_and_then_reported():
    engine = FakeEngine()
    lock = ServiceLock(DockerStore(engine, "sha256:img"), "web", "r2", 1, [].append)
    lock.acquire()
    calls = []

    def broken(name, labels):
        calls.append(name)
        raise RuntimeError("Connection broken: IncompleteRead(0 bytes read)")
    engine.create_volume = broken
    try:
        deadline = time.monotonic() + 30
        while not lock.lost and time.monotonic() < deadline:
            threading.Event().wait(0.05)  # time.sleep is a no-op here (quick_retries)
        assert lock.lost and "RuntimeError: Connection broken" in lock.lost and len(calls) >= 2
        with pytest.raises(service_lock.LockLost, match="could not be renewed for 1 s"):
            lock.check()
    finally:
        lock.release()


def test_a_lock_taken_but_not_made_ready_is_released_again():
    engine = FakeEngine()
    engine.create_volume("immutable-infra-lease-web-old-3", {"immutable.infra.lock_token": "old"})

    def refused(name):
        raise InfraError(f"Docker could not remove volume {name}: volume is in use")
    engine.remove_volume = refused
    with pytest.raises(InfraError, match="volume is in use"):
        with make_lock(engine).holding():
            pytest.fail("the block ran without the lock being ready")
    assert "immutable-infra-lock-web" not in engine.containers and engine.removed == ["mine"]
