"""The Docker back-end over several engines: its listing merges every engine's hosts, each with its
engine; steps go to the engine of their host. Pure logic against stand-in clients (no Docker)."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import NoBalancer
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_hosts import DockerHosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import Fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec
from ansible_collections.immutable.infra.plugins.plugin_utils.service.steps import HostSteps

SPEC = HostSpec("web", "sha256:" + "a" * 64, 8000, {}, {"timeout": 5, "interval": 0.1, "healthy_threshold": 1})


class StandIn:
    """Answers the calls the Docker back-end makes, from a list of containers."""

    def __init__(self, where: str, containers: list[dict[str, Any]], answering: bool = True) -> None:
        self.where = where
        self.containers = containers
        self.answering = answering
        self.calls: list[tuple[str, str]] = []
        self.volumes: dict[str, dict[str, str]] = {}

    def containers_with_labels(self, labels: dict[str, str | None], include_stopped: bool = True,
                               inspect: bool = True) -> list[dict[str, Any]]:
        if not self.answering:
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


def backend(addressing: str = "container", **engines: StandIn) -> DockerHosts:
    declared = parse_engines([{"name": name, "docker_host": client.where,
                               **({"advertise_address": "192.0.2.7"} if name == "rig1" else {})}
                              for name, client in engines.items()])
    return DockerHosts(Fleet(declared, dict(engines), addressing=addressing), "web")  # type: ignore[arg-type]


def engine(port: int, *containers: dict[str, Any]) -> StandIn:
    return StandIn(f"tcp://127.0.0.1:{port}", list(containers))


def steps_of(hosts: DockerHosts, progress=lambda message: None) -> HostSteps:
    return HostSteps(hosts, NoBalancer(), SPEC, hosts.store(), progress)


def test_the_listing_merges_every_engine_and_each_host_knows_its_engine():
    hosts = backend(rig1=engine(1, container("web-1-1", "10.0.1.2")), rig2=engine(2, container("web-1-2", "10.0.2.2")),
                    rig3=engine(3, container("web-1-3", "10.0.3.2", running=False)))
    steps = steps_of(hosts)
    try:
        observation = steps.observe()
    finally:
        steps.close()
    assert {host.name: host.engine for host in observation.hosts} == {"web-1-1": "rig1", "web-1-2": "rig2",
                                                                      "web-1-3": "rig3"}
    assert observation.records["web-1-2"].address == "10.0.2.2"
    assert observation.records["web-1-3"].address is None
    assert observation.live() == ["web-1-1", "web-1-2"]


def test_published_addressing_uses_the_engine_address_and_the_published_port():
    ports = {"8000/tcp": [{"HostIp": "192.0.2.7", "HostPort": "32768"}]}
    hosts = backend("published", rig1=engine(1, container("web-1-1", "10.0.1.2", ports=ports)),
                    rig2=engine(2, container("web-1-2", "10.0.2.2")))
    found = {host.name: host.endpoint for host in hosts.hosts()}
    assert found["web-1-1"] == ("192.0.2.7", 32768)
    assert found["web-1-2"] is None  # nothing published: not reachable in this mode


def test_a_step_goes_to_the_engine_of_its_host_and_progress_names_it():
    rig1, rig2 = engine(1, container("web-1-1", "10.0.1.2")), engine(2, container("web-1-2", "10.0.2.2"))
    lines: list[str] = []
    steps = steps_of(backend(rig1=rig1, rig2=rig2), lines.append)
    try:
        observation = steps.observe()
        steps.apply([rp.Step(rp.REMOVE, ("web-1-2",))], observation.records, "test")
    finally:
        steps.close()
    assert rig2.calls == [("remove", "id-web-1-2")] and rig1.calls == []
    assert lines == ["web test: remove web-1-2 on rig2"]


def test_an_engine_that_stopped_answering_is_skipped_once_marked():
    rig2 = engine(2, container("web-1-2", "10.0.2.2"))
    rig2.answering = False
    hosts = backend(rig1=engine(1, container("web-1-1", "10.0.1.2")), rig2=rig2)
    with pytest.raises(EngineUnreachable) as lost:
        hosts.hosts()
    assert hosts.mark_unreachable(lost.value) == "rig2"
    assert [host.name for host in hosts.hosts()] == ["web-1-1"]


def test_one_engine_keeps_the_single_engine_shape():
    client = StandIn("unix:///var/run/docker.sock", [container("web-1-1", "172.17.0.2")])
    hosts = DockerHosts(Fleet(parse_engines(None), {"default": client}), "web")  # type: ignore[dict-item]
    lines: list[str] = []
    steps = steps_of(hosts, lines.append)
    try:
        observation = steps.observe()
        steps.apply([rp.Step(rp.REMOVE, ("web-1-1",))], observation.records, "test")
    finally:
        steps.close()
    assert observation.hosts[0].engine == "default" and lines == ["web test: remove web-1-1"]
    assert "immutable.infra.engine" not in SPEC.labels(1, 1, "r1")  # one engine: hosts as before engines
    assert SPEC.labels(1, 1, "r1", "rig1")["immutable.infra.engine"] == "rig1"
