"""ServiceHosts over several engines: observe merges every engine's hosts, each with its engine; steps
go to the engine of their host. Pure logic against stand-in clients (no Docker)."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.adapter import NoBalancer
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.hosts import HostSpec, ServiceHosts

SPEC = HostSpec("web", "sha256:" + "a" * 64, 8000, {}, {"timeout": 5, "interval": 0.1, "healthy_threshold": 1})


class StandIn:
    """Answers the calls ServiceHosts makes, from a list of containers."""

    def __init__(self, where: str, containers: list[dict[str, Any]]) -> None:
        self.where = where
        self.containers = containers
        self.calls: list[tuple[str, str]] = []
        self.volumes: dict[str, dict[str, str]] = {}

    def containers_with_labels(self, labels: dict[str, str | None], inspect: bool = True) -> list[dict[str, Any]]:
        if self.where == "down":
            raise EngineUnreachable("gone", engine=self.where)
        return self.containers

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return self.volumes.get(name)

    def remove_container(self, container_id: str) -> None:
        self.calls.append(("remove", container_id))


def container(name: str, address: str, running: bool = True, ports: dict | None = None) -> dict[str, Any]:
    generation, index = name.split("-")[1:]
    return {"Id": f"id-{name}", "Name": f"/{name}",
            "Config": {"Labels": SPEC.labels(int(generation), int(index), "r1")},
            "State": {"Running": running, "Status": "running" if running else "exited"},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": address}}, "Ports": ports or {}}}


def fleet(**engines: list[dict[str, Any]]) -> dict[str, StandIn]:
    return {name: StandIn(f"tcp://{name}", containers) for name, containers in engines.items()}


def test_observe_merges_every_engine_and_each_host_knows_its_engine():
    clients = fleet(rig1=[container("web-1-1", "10.0.1.2")], rig2=[container("web-1-2", "10.0.2.2")],
                    rig3=[container("web-1-3", "10.0.3.2", running=False)])
    hosts = ServiceHosts(clients, NoBalancer(), SPEC, lambda message: None)
    try:
        observation = hosts.observe()
    finally:
        hosts.close()
    assert {host.name: host.engine for host in observation.hosts} == {"web-1-1": "rig1", "web-1-2": "rig2",
                                                                      "web-1-3": "rig3"}
    assert observation.records["web-1-2"].address == "10.0.2.2"
    assert observation.records["web-1-3"].address is None
    assert observation.live() == ["web-1-1", "web-1-2"]


def test_published_addressing_uses_the_engine_address_and_the_published_port():
    ports = {"8000/tcp": [{"HostIp": "192.0.2.7", "HostPort": "32768"}]}
    clients = fleet(rig1=[container("web-1-1", "10.0.1.2", ports=ports)], rig2=[container("web-1-2", "10.0.2.2")])
    hosts = ServiceHosts(clients, NoBalancer(), SPEC, lambda message: None, addressing="published",
                         addresses={"rig1": "192.0.2.7", "rig2": None})
    try:
        records = hosts.observe().records
    finally:
        hosts.close()
    assert (records["web-1-1"].address, records["web-1-1"].port) == ("192.0.2.7", 32768)
    assert records["web-1-2"].address is None  # nothing published: not reachable in this mode


def test_a_step_goes_to_the_engine_of_its_host_and_progress_names_it():
    clients = fleet(rig1=[container("web-1-1", "10.0.1.2")], rig2=[container("web-1-2", "10.0.2.2")])
    lines: list[str] = []
    hosts = ServiceHosts(clients, NoBalancer(), SPEC, lines.append)
    try:
        observation = hosts.observe()
        hosts.apply([rp.Step(rp.REMOVE, ("web-1-2",))], observation.records, "test")
    finally:
        hosts.close()
    assert clients["rig2"].calls == [("remove", "id-web-1-2")] and clients["rig1"].calls == []
    assert lines == ["web test: remove web-1-2 on rig2"]


def test_an_engine_that_stopped_answering_is_skipped_once_marked():
    clients = fleet(rig1=[container("web-1-1", "10.0.1.2")])
    clients["rig2"] = StandIn("down", [container("web-1-2", "10.0.2.2")])
    hosts = ServiceHosts(clients, NoBalancer(), SPEC, lambda message: None)
    try:
        try:
            hosts.observe()
            raise AssertionError("observe should fail while rig2 is not marked down")
        except EngineUnreachable as error:
            assert hosts.mark_unreachable(error) == "rig2"
        assert [host.name for host in hosts.observe().hosts] == ["web-1-1"]
    finally:
        hosts.close()


def test_one_engine_keeps_the_single_engine_shape():
    client = StandIn("unix:///var/run/docker.sock", [container("web-1-1", "172.17.0.2")])
    lines: list[str] = []
    hosts = ServiceHosts(client, NoBalancer(), SPEC, lines.append)  # type: ignore[arg-type]
    try:
        observation = hosts.observe()
        hosts.apply([rp.Step(rp.REMOVE, ("web-1-1",))], observation.records, "test")
    finally:
        hosts.close()
    assert observation.hosts[0].engine == "default" and lines == ["web test: remove web-1-1"]
    assert "immutable.infra.engine" not in SPEC.labels(1, 1, "r1")  # one engine: hosts as before engines
    assert SPEC.labels(1, 1, "r1", "rig1")["immutable.infra.engine"] == "rig1"
