"""The HAProxy adapter against a real HAProxy (Debian's haproxy package) and real HTTP backends on 127.0.0.1."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import replace

import pytest
import requests

# start_haproxy and start_http_backend are fixtures: pytest finds them by name in this module.
from haproxy_support import BackendConfig, free_port

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Arrival
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy import HAProxyRuntime
from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy_backend import HAProxyBalancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

# HAProxy applies no default-server line to servers added at runtime; these match the fixture's.
FAST_CHECKS = ("inter", "100ms", "rise", "1", "fall", "1")
MAX_REQUESTS = 2000
MAX_SECONDS = 10.0


class Traffic:
    """Clients sending GETs through the frontend until stopped (at most MAX_REQUESTS in MAX_SECONDS).

    One client keeps its connection alive, the other opens a new one per request.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failures: list[str] = []
        self.served_by: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = 0.0
        self._clients = [threading.Thread(target=self._run, args=(keep_alive,), daemon=True)
                         for keep_alive in (True, False)]

    def __enter__(self) -> Traffic:
        self._started = time.monotonic()
        for client in self._clients:
            client.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for client in self._clients:
            client.join(MAX_SECONDS)

    def wait_for(self, requests_count: int) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        while self.sent < requests_count and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self, keep_alive: bool) -> None:
        session = requests.Session() if keep_alive else requests
        while not self._stop.is_set() and time.monotonic() - self._started < MAX_SECONDS:
            with self._lock:
                if self.sent >= MAX_REQUESTS:
                    return
                self.sent += 1
            backend, failure = None, None
            try:
                response = session.get(self.url, timeout=5)
                if response.status_code == 200:
                    backend = response.text
                else:
                    failure = f"HTTP {response.status_code} {response.text[:80]!r}"
            except requests.RequestException as error:
                failure = str(error)
            with self._lock:
                if failure is None:
                    self.served_by[backend] += 1
                else:
                    self.failures.append(failure)
            time.sleep(0.005)


def get(url: str, **options) -> requests.Response:
    return requests.get(url, timeout=5, **options)


def answers(url: str, count: int = 4, **options) -> set[str]:
    """Which backends answered `count` requests."""
    return {get(url, **options).text for attempt in range(count)}


def bring_in(runtime: HAProxyRuntime, backend: str, app) -> str:
    """What a rollout does for a new host: add it, wait for its health check, then give it traffic."""
    server = runtime.add_server(backend, app.name, app.address, app.port, server_options=FAST_CHECKS)
    runtime.wait_until_up(backend, server, timeout=5, interval=0.05)
    runtime.set_state(backend, server, "ready")
    return server


def slow_request_in_background(url: str, seconds: float) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def send() -> None:
        response = get(f"{url}slow?seconds={seconds}")
        result.update(status=response.status_code, body=response.text)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, result


def server_with_a_session(runtime: HAProxyRuntime, backend: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        busy = [server.name for server in runtime.servers(backend) if server.current_sessions]
        if busy:
            return busy[0]
        time.sleep(0.02)
    pytest.fail("the slow request never reached a server")


def test_observes_backends_and_free_template_slots(start_haproxy):
    proxy = start_haproxy(BackendConfig("web", slots=2), BackendConfig("api"))
    runtime = HAProxyRuntime(proxy.runtime_api)

    assert runtime.backends() == ["web", "api"]
    slots = runtime.servers("web")
    assert [server.name for server in slots] == ["slot1", "slot2"]
    assert all(server.free_slot and server.template_slot and server.admin_state == "maint"
               and server.address == "0.0.0.0" and server.status == "MAINT" for server in slots)
    assert runtime.servers("api") == []


def test_add_server_takes_a_free_template_slot_and_remove_parks_it(start_haproxy, start_http_backend):
    first, second = start_http_backend("app-1"), start_http_backend("app-2")
    proxy = start_haproxy(BackendConfig("web", slots=2))
    runtime = HAProxyRuntime(proxy.runtime_api)

    slot = runtime.add_server("web", "app-1", first.address, first.port)
    assert slot == "slot1"
    record = runtime.server("web", "slot1")
    assert (record.address, record.port, record.admin_state) == ("127.0.0.1", first.port, "drain")
    assert record.template_slot and not record.free_slot and record.check_enabled
    assert get(proxy.url()).status_code == 503  # a new server takes no traffic before it is set ready
    assert runtime.wait_until_up("web", slot, timeout=5, interval=0.05) < 2
    runtime.set_state("web", slot, "ready")
    assert get(proxy.url()).text == "app-1"

    assert bring_in(runtime, "web", second) == "slot2"
    assert runtime.server_at("web", second.address, second.port).name == "slot2"
    assert answers(proxy.url()) == {"app-1", "app-2"}

    runtime.remove_server("web", "slot1")
    parked = runtime.server("web", "slot1")
    assert parked.free_slot and parked.address == "0.0.0.0" and not parked.check_enabled
    assert answers(proxy.url()) == {"app-2"}
    assert runtime.add_server("web", "app-3", first.address, first.port) == "slot1"  # the slot is reused


def test_add_server_adds_a_dynamic_server_when_there_are_no_slots(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("api"))
    runtime = HAProxyRuntime(proxy.runtime_api)

    assert bring_in(runtime, "api", app) == "app-1"
    record = runtime.server("api", "app-1")
    assert record.healthy and record.check_status == "L7OK" and not record.template_slot
    assert get(proxy.url()).text == "app-1"

    runtime.remove_server("api", "app-1")
    assert runtime.servers("api") == []
    assert get(proxy.url()).status_code == 503


def test_remove_server_lets_an_in_flight_request_finish_before_deleting(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("api"))
    runtime = HAProxyRuntime(proxy.runtime_api)
    bring_in(runtime, "api", app)

    request, result = slow_request_in_background(proxy.url(), 1.0)
    server_with_a_session(runtime, "api")
    started = time.monotonic()
    runtime.remove_server("api", "app-1", timeout=5)
    request.join(5)

    assert time.monotonic() - started > 0.5  # HAProxy refused to delete it while the request ran
    assert result == {"status": 200, "body": "app-1"}
    assert runtime.servers("api") == []


def test_dynamic_servers_need_a_dynamic_balance_algorithm(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("sticky", balance="source"), BackendConfig("fixed", slots=1, balance="static-rr"))
    runtime = HAProxyRuntime(proxy.runtime_api)

    with pytest.raises(InfraError, match=r"backend sticky: Backend must use a dynamic load balancing.*"
                                         r"hash-type consistent"):
        runtime.add_server("sticky", "app-1", app.address, app.port)

    assert runtime.add_server("fixed", "app-1", app.address, app.port) == "slot1"
    with pytest.raises(InfraError, match="all 1 server-template slots are taken"):
        runtime.add_server("fixed", "app-2", app.address, app.port)


def test_drain_keeps_existing_sessions_and_takes_no_new_ones(start_haproxy, start_http_backend):
    apps = [start_http_backend("app-1"), start_http_backend("app-2")]
    proxy = start_haproxy(BackendConfig("web", slots=2))
    runtime = HAProxyRuntime(proxy.runtime_api)
    slots = {bring_in(runtime, "web", app): app.name for app in apps}

    request, result = slow_request_in_background(proxy.url(), 1.0)
    busy = server_with_a_session(runtime, "web")
    runtime.set_state("web", busy, "drain")
    other = next(name for slot, name in slots.items() if slot != busy)

    assert answers(proxy.url(), 10) == {other}
    assert runtime.server("web", busy).current_sessions == 1
    waited = runtime.wait_until_drained("web", busy, timeout=5, interval=0.05)
    request.join(5)
    assert waited > 0.3
    assert result == {"status": 200, "body": slots[busy]}


def test_maint_cuts_a_server_out_even_for_persistent_clients(start_haproxy, start_http_backend):
    first, second = start_http_backend("app-1"), start_http_backend("app-2")
    proxy = start_haproxy(BackendConfig("shop", extra_lines=["cookie SRV insert indirect nocache"], servers=[
        f"server app-1 {first.address}:{first.port} check cookie one",
        f"server app-2 {second.address}:{second.port} check cookie two"]))
    runtime = HAProxyRuntime(proxy.runtime_api)
    runtime.wait_until_up("shop", "app-1", timeout=5, interval=0.05)
    pinned = {"SRV": "one"}

    runtime.set_state("shop", "app-1", "drain")
    assert answers(proxy.url(), cookies=pinned) == {"app-1"}  # persistence still honoured
    assert get(proxy.url()).text == "app-2"
    assert runtime.server("shop", "app-1").check_enabled

    runtime.set_state("shop", "app-1", "maint")
    assert answers(proxy.url(), cookies=pinned) == {"app-2"}
    record = runtime.server("shop", "app-1")
    assert record.admin_state == "maint" and not record.check_enabled and record.status == "MAINT"


@pytest.mark.parametrize("config", [BackendConfig("web", slots=3), BackendConfig("web")], ids=["slots", "dynamic"])
def test_traffic_keeps_flowing_while_a_server_is_swapped_out(start_haproxy, start_http_backend, config):
    old_1, old_2 = start_http_backend("old-1"), start_http_backend("old-2")
    new_1 = start_http_backend("new-1", healthy=False)  # still starting: answers 503 for a moment
    proxy = start_haproxy(config)
    runtime = HAProxyRuntime(proxy.runtime_api)
    old_1_server = bring_in(runtime, "web", old_1)
    bring_in(runtime, "web", old_2)

    with Traffic(proxy.url()) as traffic:
        traffic.wait_for(50)
        threading.Timer(0.3, setattr, (new_1, "healthy", True)).start()
        new_server = bring_in(runtime, "web", new_1)
        traffic.wait_for(traffic.sent + 50)
        runtime.set_state("web", old_1_server, "drain")
        runtime.wait_until_drained("web", old_1_server, timeout=5, interval=0.05)
        runtime.remove_server("web", old_1_server)
        served_by_old_1 = old_1.requests_served
        old_1.stop()  # the retired host goes away, as its container would
        traffic.wait_for(traffic.sent + 100)

    assert not traffic.failures, f"{len(traffic.failures)} of {traffic.sent} requests failed: {traffic.failures[:5]}"
    assert traffic.sent >= 200
    assert old_1.requests_served == served_by_old_1
    assert traffic.served_by["new-1"] > 0 and traffic.served_by["old-2"] > 0
    names = {server.name: server for server in runtime.servers("web")}
    assert names[new_server].admin_state == "ready"
    assert old_1_server not in names or names[old_1_server].free_slot


def test_template_slots_survive_a_reload_through_the_server_state_file(start_haproxy, start_http_backend):
    first, second = start_http_backend("app-1"), start_http_backend("app-2")
    proxy = start_haproxy(BackendConfig("web", slots=3))
    runtime = HAProxyRuntime(proxy.runtime_api)
    bring_in(runtime, "web", first)
    runtime.add_server("web", "app-2", second.address, second.port)
    runtime.wait_until_up("web", "slot2", timeout=5, interval=0.05)
    before = [(server.name, server.address, server.port, server.admin_state, server.free_slot)
              for server in runtime.servers("web")]

    proxy.reload()

    after = [(server.name, server.address, server.port, server.admin_state, server.free_slot)
             for server in runtime.servers("web")]
    assert after == before
    assert before[2] == ("slot3", "0.0.0.0", 80, "maint", True)
    assert answers(proxy.url()) == {"app-1"}


def test_a_server_set_ready_at_once_gets_no_traffic_before_its_first_check(start_haproxy, start_http_backend):
    # HAProxy counts a server leaving maintenance as up until a check says otherwise; add_server forces
    # it down instead, so even "ready" at once never sends clients to a host still starting.
    ready, starting = start_http_backend("app-1"), start_http_backend("starting", healthy=False)
    proxy = start_haproxy(BackendConfig("web", slots=2, check_interval="2s"))
    runtime = HAProxyRuntime(proxy.runtime_api)
    runtime.add_server("web", "app-1", ready.address, ready.port, check=False, state="ready")

    runtime.add_server("web", "starting", starting.address, starting.port, state="ready")
    statuses = [get(proxy.url()).status_code for attempt in range(6)]

    assert statuses == [200] * 6


def test_unknown_backend_and_server_are_named(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("web", slots=2), BackendConfig("api"))
    runtime = HAProxyRuntime(proxy.runtime_api)

    for action in (lambda: runtime.servers("wbe"), lambda: runtime.set_state("wbe", "slot1", "drain"),
                   lambda: runtime.add_server("wbe", "app-1", app.address, app.port)):
        with pytest.raises(InfraError, match=r"no backend named wbe; its backends are: web, api "
                                             r"\(check the balancer.backend option\)\."):
            action()
    with pytest.raises(InfraError, match=r"backend web has no server named app-9; its servers are: slot1, slot2\."):
        runtime.set_state("web", "app-9", "drain")


def test_unreachable_runtime_api_says_what_to_check(tmp_path):
    missing = str(tmp_path / "admin.sock")
    with pytest.raises(InfraError, match=rf"Cannot reach the HAProxy runtime API at {missing}: no such socket file; "
                                         r"check the `stats socket` line of haproxy.cfg"):
        HAProxyRuntime(missing).backends()

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(InfraError, match=rf"runtime API at {address}: connection refused"):
        HAProxyRuntime(address, timeout=1).servers("web")


def test_tcp_runtime_api_address(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("web", slots=1), tcp_api=True)
    runtime = HAProxyRuntime(proxy.tcp_runtime_api)

    assert runtime.backends() == ["web"]
    assert bring_in(runtime, "web", app) == "slot1"
    assert get(proxy.url()).text == "app-1"


def test_a_server_that_never_becomes_healthy_times_out_clearly(start_haproxy, start_http_backend):
    broken = start_http_backend("broken", healthy=False)
    proxy = start_haproxy(BackendConfig("web", slots=1))
    runtime = HAProxyRuntime(proxy.runtime_api)
    slot = runtime.add_server("web", "broken", broken.address, broken.port)

    started = time.monotonic()
    with pytest.raises(InfraError, match=r"server web/slot1 did not become healthy \(up with a passing health check\) "
                                         r"within 1s; last seen: 127\.0\.0\.1:\d+, drain, down, check L7STS"):
        runtime.wait_until_up("web", slot, timeout=1, interval=0.05)
    assert time.monotonic() - started < 2
    assert broken.requests_served == 0


def test_a_reused_slot_is_not_up_until_its_new_address_passes_a_check(start_haproxy, start_http_backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(BackendConfig("web", slots=1))
    runtime = HAProxyRuntime(proxy.runtime_api)
    slot = runtime.add_server("web", "app-1", app.address, app.port)
    runtime.wait_until_up("web", slot, timeout=5)
    runtime.set_state("web", slot, "drain")
    runtime.remove_server("web", slot)

    # The slot's last check passed; a new address where nothing listens must not inherit that.
    again = runtime.add_server("web", "nobody", "127.0.0.1", free_port())
    assert again == slot
    with pytest.raises(InfraError, match="did not become healthy"):
        runtime.wait_until_up("web", again, timeout=1)


@pytest.mark.parametrize("backend", [BackendConfig("web", slots=2), BackendConfig("api")], ids=["slot", "dynamic"])
def test_activation_registers_the_host_again_when_a_reload_lost_its_server(start_haproxy, start_http_backend,
                                                                           backend):
    app = start_http_backend("app-1")
    proxy = start_haproxy(backend)
    balancer = HAProxyBalancer({"runtime_api": proxy.runtime_api, "backend": backend.name,
                                "server_options": list(FAST_CHECKS), "up_timeout": 10})
    proxy.save_server_state()
    server = balancer.register("app-1", app.address, app.port)
    proxy.reload_in_place(save_state=False)  # the new process loads a state saved before the registration
    assert (app.address, app.port) not in [(record.address, record.port) for record in balancer.runtime.servers(backend.name)]

    activated = balancer.activate(server, "app-1", app.address, app.port)

    record = balancer.runtime.server(backend.name, activated)
    assert ((record.address, record.port), record.admin_state, record.operational_state) == \
        ((app.address, app.port), "ready", "up")
    assert answers(proxy.url(backend.name)) == {"app-1"}


def test_activation_that_times_out_takes_the_server_out_again(start_haproxy, start_http_backend):
    broken = start_http_backend("broken", healthy=False)
    proxy = start_haproxy(BackendConfig("web", slots=1))
    balancer = HAProxyBalancer({"runtime_api": proxy.runtime_api, "backend": "web", "up_timeout": 1,
                                "server_options": list(FAST_CHECKS), "trust_gate": False})
    server = balancer.register("broken", broken.address, broken.port)

    with pytest.raises(InfraError, match=r"server web/slot1 did not come up within 1s; last seen: 127\.0\.0\.1:"):
        balancer.activate(server, "broken", broken.address, broken.port)
    assert balancer.runtime.server("web", "slot1").free_slot


def counting_connections(runtime: HAProxyRuntime) -> list[str]:
    """Notes the first command of every connection the runtime opens from now on."""
    opened: list[str] = []
    send = runtime._send

    def noted(text: str, what: str) -> str:
        opened.append(what)
        return send(text, what)
    runtime._send = noted  # type: ignore[method-assign]
    return opened


def test_a_batch_of_hosts_comes_in_and_goes_out_with_one_connection_per_change(start_haproxy, start_http_backend):
    apps = [start_http_backend(f"app-{index}") for index in range(1, 4)]
    proxy = start_haproxy(BackendConfig("web", slots=4))
    balancer = HAProxyBalancer({"runtime_api": proxy.runtime_api, "backend": "web", "up_timeout": 10,
                                "server_options": list(FAST_CHECKS)})
    opened = counting_connections(balancer.runtime)
    arrivals = [Arrival(app.name, app.address, app.port) for app in apps]

    servers = balancer.register_all(arrivals)
    assert servers == ["slot1", "slot2", "slot3"] and len(opened) == 2  # one read, one exchange of 12 commands
    held = {record.name: record for record in balancer.runtime.servers("web")}
    assert all(held[server].admin_state == "drain" and held[server].check_enabled for server in servers)
    assert get(proxy.url()).status_code == 503  # nothing takes traffic yet

    opened.clear()
    assert balancer.activate_all([replace(arrival, server=server) for arrival, server in zip(arrivals, servers, strict=True)]) \
        == servers
    assert len(opened) == 3  # read, one exchange forcing them up and ready, read to see them so
    assert answers(proxy.url(), count=9) == {"app-1", "app-2", "app-3"}

    opened.clear()
    balancer.set_states(servers, "drain")
    assert balancer.wait_all_drained(servers, timeout=5) == []
    balancer.detach_all(servers)
    assert len(opened) == 4  # the drain, a read while draining, a read and one exchange taking them out
    assert all(record.free_slot for record in balancer.runtime.servers("web"))


def test_each_host_of_a_batch_has_its_own_outcome(start_haproxy, start_http_backend):
    good, broken = start_http_backend("good"), start_http_backend("broken", healthy=False)
    proxy = start_haproxy(BackendConfig("web", slots=2))
    balancer = HAProxyBalancer({"runtime_api": proxy.runtime_api, "backend": "web", "up_timeout": 1,
                                "server_options": list(FAST_CHECKS), "trust_gate": False})
    outcomes = balancer.register_all([Arrival("good", good.address, good.port), Arrival("nowhere", "host.name", 80),
                                      Arrival("broken", broken.address, broken.port)])
    assert outcomes[0] == "slot1" and outcomes[2] == "slot2"
    assert isinstance(outcomes[1], InfraError) and "is not an IP address" in outcomes[1].message

    activated = balancer.activate_all([Arrival("good", good.address, good.port, "slot1"),
                                       Arrival("broken", broken.address, broken.port, "slot2")])
    assert activated[0] == "slot1"
    assert isinstance(activated[1], InfraError) and "server web/slot2 did not come up within 1s" in activated[1].message
    assert balancer.runtime.server("web", "slot2").free_slot  # the one that failed is out again
    assert answers(proxy.url()) == {"good"}


def test_replies_of_an_exchange_are_split_per_command(start_haproxy):
    proxy = start_haproxy(BackendConfig("web", slots=1))
    runtime = HAProxyRuntime(proxy.runtime_api)
    replies = runtime.exchange(["show servers state web", "set server web/nope state ready",
                                "set server web/slot1 state maint", "show backend"])
    assert replies[0].startswith("1\n# be_id") and "slot1" in replies[0]
    assert replies[1].strip() == "No such server." and replies[2] == ""
    assert "web" in replies[3].split()


def test_a_server_the_balancer_lost_counts_as_out_for_drain_maint_and_detach_but_not_for_ready(
        start_haproxy, start_http_backend):
    """HAProxy reloaded without its dynamic servers mid-rollout: taking a lost server out of traffic is done
    already, not a failure that would revert the rollout; letting it take traffic again is refused."""
    apps = [start_http_backend(f"app-{number}") for number in (1, 2)]
    proxy = start_haproxy(BackendConfig("api"))
    runtime = HAProxyRuntime(proxy.runtime_api)
    bring_in(runtime, "api", apps[0])
    proxy.reload_in_place(save_state=False)
    assert runtime.servers("api") == []  # app-1 was lost with the old process
    bring_in(runtime, "api", apps[1])
    balancer = HAProxyBalancer({"runtime_api": proxy.runtime_api, "backend": "api", "server_options": [],
                                "up_timeout": 10})
    for state in ("drain", "maint"):
        balancer.set_states(["app-1", "app-2"], state)
        assert runtime.server("api", "app-2").admin_state == state
    with pytest.raises(InfraError, match=r"backend api has no server named app-1; its servers are: app-2\."):
        balancer.set_states(["app-1", "app-2"], "ready")
    balancer.detach_all(["app-1", "app-2"])
    balancer.detach("app-1")
    assert runtime.servers("api") == []
