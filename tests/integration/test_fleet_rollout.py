"""immutable.infra.rollout and rollback over the three engines of the rig (make engines), behind one real
HAProxy, under steady load: one host per engine, the image shipped by the registry or streamed, one
transaction across engines (a host failing on one engine, an engine killed mid-way), the registry down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from engines_support import remove_everywhere, rig_or_skip
from rollout_support import SteadyLoad, remove_service, rollout_task, service_name
from support import REPO_ROOT

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verdict_volume_name

pytestmark = pytest.mark.rig

SCRIPTS = os.path.join(REPO_ROOT, "scripts")
FAST_HEALTH = {"http_path": "/healthz", "timeout": 20, "interval": 0.2}


@pytest.fixture(scope="module")
def rig():
    return rig_or_skip()


@pytest.fixture(scope="module")
def hello(shared_hello, rig):
    """Two verified versions of the example service, baked on the controller's own engine only (so the
    first rollout has to ship them); removed from every rig engine afterwards."""
    images = shared_hello({"1.0": {}, "2.0": {}})
    yield images
    clients = rig[2]
    for image_id in images.values():
        remove_everywhere(clients, image_id)
        for client in clients.values():
            client.remove_volume(verdict_volume_name(image_id))


@pytest.fixture
def fleet_service(rig):
    name = service_name()
    yield name
    for client in rig[2].values():
        remove_service(client.sdk, name)


def engines_option(description: dict) -> list[dict]:
    return [{"name": engine["name"], "docker_host": engine["docker_host"], "tls": engine["tls"]}
            for engine in description["engines"]]


def fleet_task(rig, service: str, image: str, proxy, **options) -> dict:
    options.setdefault("health", FAST_HEALTH)
    options.setdefault("engines", engines_option(rig[0]))
    options.setdefault("registry", {"address": rig[0]["registry"]})
    return rollout_task(service, image, proxy, **options)


def where(rig, service: str, running: bool | None = True) -> dict[str, str]:
    """{host: engine} of the service's containers on the rig engines (running ones by default)."""
    found = {}
    for engine, client in rig[2].items():
        for container in client.sdk.containers.list(all=True, filters={"label": f"immutable.infra.service={service}"}):
            if running is None or (container.status == "running") == running:
                found[container.name] = engine
    return found


def endpoint(rig, engine: str, name: str, addressing: str = "container") -> tuple[str, int]:
    attrs = rig[2][engine].sdk.containers.get(name).attrs
    if addressing == "published":
        return "127.0.0.1", int(attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"])
    return attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], 8000


def in_balancer(proxy) -> dict[str, tuple[str, int, str]]:
    """{server: (address, port, admin state)} of the servers that take part (not free slots)."""
    members = {}
    for line in proxy.command("show servers state web").splitlines()[2:]:
        fields = line.split()
        if len(fields) > 18 and fields[4] != "0.0.0.0":
            admin = int(fields[6])
            members[fields[3]] = (fields[4], int(fields[18]),
                                  "maint" if admin & 0x23 else "drain" if admin & 0x18 else "ready")
    return members


def assert_balancer_matches(rig, proxy, live: dict[str, str], addressing: str = "container") -> None:
    expected = {endpoint(rig, engine, name, addressing) for name, engine in live.items()}
    members = in_balancer(proxy)
    assert {(address, port) for address, port, _state in members.values()} == expected, members
    assert all(state == "ready" for _address, _port, state in members.values()), members


def drop_image(rig, engine: str, image_id: str) -> None:
    client = rig[2][engine]
    if client.image(image_id) is not None:
        client.sdk.images.remove(image_id, force=True)
    assert client.image(image_id) is None


def journal_on(rig, engine: str, service: str) -> bool:
    return rig[2][engine].volume_labels(f"immutable-infra-rollout-{service}") is not None


def test_rolling_over_three_engines_ships_the_image_and_drops_nothing(project, rig, hello, fleet_service, proxy):
    engines = [engine["name"] for engine in rig[0]["engines"]]
    for engine in engines:
        drop_image(rig, engine, hello["1.0"])
    authenticated = dict(rig[0]["auth_registry"], repository=f"itest/{fleet_service}")
    run = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy, registry=authenticated)], extra_args=["-v"])
    first = run["rollout"]
    assert first["changed"] and first["generation"] == 1, first.get("msg")
    assert authenticated["password"] not in run.output + json.dumps(first)  # no_log, in the result too
    hosts = {f"{fleet_service}-1-{index}": engine for index, engine in enumerate(engines, start=1)}
    assert first["hosts"] == hosts and where(rig, fleet_service) == hosts
    assert (first["shipping"]["method"], first["shipping"]["targets"]) == ("registry", engines)
    assert all(rig[2][engine].image(hello["1.0"])["Id"] == hello["1.0"] for engine in engines)
    assert_balancer_matches(rig, proxy, hosts)

    preview = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy)], check=True)["rollout"]
    assert preview["changed"] and preview["shipping"]["targets"] == engines
    assert preview["plan"][0]["engines"] == [engines[0]] and preview["placement"]["counts"] == dict.fromkeys(engines, 1)
    assert where(rig, fleet_service, running=None) == hosts  # check mode started nothing
    assert all(rig[2][engine].image(hello["2.0"]) is None for engine in engines)  # and shipped nothing

    with SteadyLoad(proxy.url(), rate=100, max_seconds=90) as load:
        run = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy)])
        time.sleep(0.5)
    second, summary = run["rollout"], load.summary()
    assert f"gen 2: batch 2: start {fleet_service}-2-2 on rig2" in run.output  # progress names each host's engine
    assert second["changed"] and second["generation"] == 2, second.get("msg")
    new_hosts = {f"{fleet_service}-2-{index}": engine for index, engine in enumerate(engines, start=1)}
    assert second["hosts"] == new_hosts and where(rig, fleet_service) == new_hosts  # each slot kept its engine
    assert where(rig, fleet_service, running=False) == hosts  # kept for rollback, on their engines
    assert summary["failed"] == 0 and summary["sent"] > 100, summary
    assert set(summary["answers_by_version"]) == {"1.0", "2.0"}
    assert_balancer_matches(rig, proxy, new_hosts)
    assert second["plan"][0]["engines"] == ["rig1"]

    ledger = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    record = [entry for entry in ledger if entry.get("kind") == "rollout" and entry.get("service") == fleet_service][-1]
    assert (record["result"], record["placement"], record["engines"]) == ("succeeded", new_hosts, engines)


def test_blue_green_with_published_ports_streams_a_missing_image_and_drops_nothing(
        project, rig, hello, fleet_service, proxy):
    engines = [engine["name"] for engine in rig[0]["engines"]]
    # The second engine's hosts are reached at an advertised address (loopback here too), and their ports
    # bound to every address of the machine.
    declared = engines_option(rig[0])
    declared[1]["advertise_address"] = "127.0.0.1"
    first = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy, addressing="published",
                                    engines=declared)])["rollout"]
    assert first["changed"] and first["addressing"] == "published", first.get("msg")
    assert_balancer_matches(rig, proxy, first["hosts"], "published")
    drop_image(rig, engines[1], hello["2.0"])

    with SteadyLoad(proxy.url(), rate=100, max_seconds=90) as load:
        result = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy, addressing="published",
                                         engines=declared, strategy="blue_green",
                                         image_transfer="stream")])["rollout"]
        time.sleep(0.5)
    assert result["changed"] and result["generation"] == 2, result.get("msg")
    assert load.summary()["failed"] == 0, load.summary()
    assert result["shipping"]["method"] == "stream" and engines[1] in result["shipping"]["targets"]
    assert rig[2][engines[1]].image(hello["2.0"])["Id"] == hello["2.0"]
    assert [step["action"] for step in result["plan"]] == ["start", "wait_healthy", "add", "drain", "wait_drained",
                                                           "detach", "stop"]
    assert sorted(result["hosts"].values()) == engines
    assert_balancer_matches(rig, proxy, result["hosts"], "published")
    bound = {engine: rig[2][engine].sdk.containers.get(name).attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostIp"]
             for name, engine in result["hosts"].items()}
    assert bound == {engines[0]: "127.0.0.1", engines[1]: "0.0.0.0", engines[2]: "127.0.0.1"}


def test_a_host_failing_its_check_on_one_engine_reverts_every_engine(project, rig, hello, fleet_service, proxy):
    live = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy)])["rollout"]
    assert live["changed"], live.get("msg")
    # Only a host on rig3 (its bridge is 10.231.3.0/24) fails this check; rig1 and rig2 are swapped first.
    only_off_rig3 = {"command": ["sh", "-c", "! grep -q '^10[.]231[.]3[.]' /etc/hosts"], "timeout": 3,
                     "interval": 0.2}
    with SteadyLoad(proxy.url(), rate=100, max_seconds=90) as load:
        result = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy, health=only_off_rig3)])["rollout"]
    assert result.get("failed") and result["rolled_back"], result
    assert result["host"] == f"{fleet_service}-2-3" and "rolled back" in result["msg"]
    assert load.summary()["failed"] == 0, load.summary()
    assert where(rig, fleet_service) == live["hosts"]
    assert where(rig, fleet_service, running=False) == {}  # the new hosts are removed on every engine
    assert_balancer_matches(rig, proxy, live["hosts"])
    assert not journal_on(rig, "rig1", fleet_service)


def _engine_pid(engine: str) -> int:
    with open(f"/run/immutable-infra-rig/{engine}.pid", encoding="ascii") as handle:
        return int(handle.read().strip())


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _kill_engine(engine: str) -> None:
    """SIGKILL: the engine's API is gone at once, connections and all (a SIGTERM'd dockerd keeps serving
    open connections while it stops its containers, which can outlast the rollout). Its containers keep
    running, as on a machine whose Docker daemon died; the rig's next start restarts them."""
    pid = _engine_pid(engine)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"engine {engine} did not die"
        time.sleep(0.05)


def _start_rig() -> None:
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "engines.py"), "up"], check=True, capture_output=True)


@pytest.mark.parametrize("lost", ["rig2", "rig1"], ids=["an-engine", "the-coordinator"])
def test_an_engine_killed_mid_rollout_reverts_the_others_and_the_next_run_converges(
        project, rig, hello, fleet_service, proxy, lost):
    """rig1, the first engine, holds the lock and the journal: killed, it takes the lock's renewals with
    it, and the others are reverted within the lease."""
    live = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy)])["rollout"]
    assert live["changed"], live.get("msg")
    slow_health = {"http_path": "/healthz", "timeout": 20, "interval": 0.5, "healthy_threshold": 6}
    outcome: dict = {}
    rollout = threading.Thread(target=lambda: outcome.update(project.run([fleet_task(
        rig, fleet_service, hello["2.0"], proxy, health=slow_health)])["rollout"]))
    rollout.start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and rollout.is_alive():
            if "rig2" in [engine for name, engine in where(rig, fleet_service).items() if "-2-" in name]:
                break  # batch 2 started its host on rig2
            time.sleep(0.05)
        assert rollout.is_alive(), f"the rollout ended before batch 2 started: {outcome.get('msg')}"
        _kill_engine(lost)
        rollout.join(120)
    finally:
        _start_rig()
    assert outcome.get("failed") and f"engine {lost} stopped answering" in outcome["msg"], outcome
    assert outcome["engines_down"] == [lost] and outcome["journal_left"]
    assert ("the lock and journal stay on rig1" if lost == "rig1" else "the journal stays on rig1") in outcome["msg"]
    # The other engines are back on generation 1 (the lost one was down until just now), and so is the balancer.
    back = {name: engine for name, engine in live["hosts"].items() if engine != lost}
    assert {name: engine for name, engine in where(rig, fleet_service).items() if engine != lost} == back
    assert not [name for name, engine in where(rig, fleet_service, running=None).items()
                if "-2-" in name and engine != lost]
    assert {(address, port) for address, port, _state in in_balancer(proxy).values()} == \
        {endpoint(rig, engine, name) for name, engine in back.items()}
    assert journal_on(rig, "rig1", fleet_service)

    again = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy)])["rollout"]
    assert again["changed"] and again["recovered"], again.get("msg")
    assert sorted(again["hosts"].values()) == ["rig1", "rig2", "rig3"]
    assert where(rig, fleet_service) == again["hosts"]
    assert_balancer_matches(rig, proxy, again["hosts"])
    assert not journal_on(rig, "rig1", fleet_service)


def test_the_registry_down_is_a_clear_error_and_changes_nothing(project, rig, hello, fleet_service, proxy):
    drop_image(rig, "rig3", hello["2.0"])
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    task = fleet_task(rig, fleet_service, hello["2.0"], proxy)
    task["immutable.infra.rollout"]["registry"] = {"address": f"127.0.0.1:{port}"}
    result = project.run([task])["rollout"]
    assert result.get("failed"), result
    assert f"The registry 127.0.0.1:{port} does not answer" in result["msg"]
    assert "Nothing was pushed or pulled" in result["msg"]
    assert where(rig, fleet_service, running=None) == {}
    assert rig[2]["rig3"].image(hello["2.0"]) is None
    assert not any(client.sdk.containers.list(all=True, filters={"name": f"immutable-infra-lock-{fleet_service}"})
                   for client in rig[2].values())
    assert not journal_on(rig, "rig1", fleet_service)


def test_rollback_starts_the_kept_hosts_on_their_engines(project, rig, hello, fleet_service, proxy):
    first = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy)])["rollout"]
    second = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy)])["rollout"]
    assert first["changed"] and second["changed"], (first.get("msg"), second.get("msg"))
    with SteadyLoad(proxy.url(), rate=100, max_seconds=60) as load:
        back = project.run([{"name": "rollback", "immutable.infra.rollback": {
            "service": fleet_service, "balancer": {"runtime_api": proxy.runtime_api, "backend": "web"},
            "engines": engines_option(rig[0]), "registry": {"address": rig[0]["registry"]},
            "health": FAST_HEALTH}}])["rollback"]
        time.sleep(0.5)
    assert back["changed"] and back["fast_path"] and back["target_image_id"] == hello["1.0"], back.get("msg")
    assert back["hosts"] == first["hosts"] and where(rig, fleet_service) == first["hosts"]
    assert load.summary()["failed"] == 0, load.summary()
    assert_balancer_matches(rig, proxy, first["hosts"])


def test_an_engine_down_at_the_start_is_named_unless_its_share_goes_to_the_others(
        project, rig, hello, fleet_service, proxy):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: no engine answers there
    task = fleet_task(rig, fleet_service, hello["1.0"], proxy)
    task["immutable.infra.rollout"]["engines"].append({"name": "rig9", "docker_host": f"tcp://127.0.0.1:{port}"})
    refused = project.run([task])["rollout"]
    assert refused.get("failed") and refused["msg"].startswith("Engine(s) rig9 cannot be reached"), refused
    assert refused["msg"].endswith("Nothing was changed.") and refused["engines_down"] == ["rig9"]
    assert where(rig, fleet_service, running=None) == {}

    task["immutable.infra.rollout"]["place_down_share"] = True
    placed = project.run([task])["rollout"]
    assert placed["changed"] and sorted(placed["hosts"].values()) == ["rig1", "rig2", "rig3"], placed.get("msg")
    assert placed["placement"]["counts"]["rig9"] == 0 and placed["placement"]["notes"]
    assert_balancer_matches(rig, proxy, placed["hosts"])


def test_an_engine_down_at_the_start_keeps_its_serving_hosts_in_the_balancer_and_reports_them(
        project, rig, hello, fleet_service, proxy):
    """A Docker engine that dies leaves its containers running: with place_down_share the rollout goes ahead
    on the other engines, keeps the lost engine's server (its check still passes) and says which host it
    could not manage; once the engine is back, the next run replaces that host like any other."""
    live = project.run([fleet_task(rig, fleet_service, hello["1.0"], proxy)])["rollout"]
    assert live["changed"], live.get("msg")
    stranded = next(name for name, engine in live["hosts"].items() if engine == "rig3")
    stranded_at = endpoint(rig, "rig3", stranded)
    task = fleet_task(rig, fleet_service, hello["2.0"], proxy, place_down_share=True)
    try:
        _kill_engine("rig3")
        with SteadyLoad(proxy.url(), rate=100, max_seconds=120) as load:
            placed = project.run([task])["rollout"]
            time.sleep(0.5)
    finally:
        _start_rig()
    assert placed["changed"] and sorted(set(placed["hosts"].values())) == ["rig1", "rig2"], placed.get("msg")
    assert list(placed["unmanaged"]["engines"]) == ["rig3"]
    assert placed["unmanaged"]["hosts"] == [{"host": stranded, "engine": "rig3", "state": "running"}]
    assert [(server["address"], server["port"]) for server in placed["unmanaged"]["servers"]] == [stranded_at]
    assert load.summary()["failed"] == 0, load.summary()
    ledger = [json.loads(line) for line in open(os.environ["IMMUTABLE_INFRA_LEDGER"], encoding="utf-8")]
    recorded = next(record for record in reversed(ledger) if record.get("service") == fleet_service
                    and record.get("kind") == "rollout")
    assert recorded["result"] == "succeeded" and recorded["unmanaged"]["hosts"][0]["host"] == stranded

    again = project.run([fleet_task(rig, fleet_service, hello["2.0"], proxy)])["rollout"]
    assert not again.get("failed"), again.get("msg")
    assert "unmanaged" not in again and stranded not in where(rig, fleet_service)
    assert_balancer_matches(rig, proxy, where(rig, fleet_service))
