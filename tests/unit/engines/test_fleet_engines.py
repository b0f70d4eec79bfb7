"""The rollout's fleet logic without engines: which engine each new host goes to, the gate over every
engine's verdicts, and what counts as an engine on this machine."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import (
    Fleet,
    place_hosts,
    require_fleet_verified,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp

ENGINES = parse_engines([{"name": f"rig{number}", "docker_host": f"tcp://127.0.0.1:2375{number}"}
                         for number in (1, 2, 3)])
IMAGE = "sha256:" + "b" * 64


def fleet(**options) -> Fleet:
    return Fleet(ENGINES, {engine.name: object() for engine in ENGINES}, **options)  # type: ignore[misc]


def observed(*hosts: tuple[str, str, bool]) -> list[rp.Host]:
    observation = []
    for name, engine, live in hosts:
        _service, generation, index = rp.parse_host_name(name)
        observation.append(rp.Host(name, generation, index, "old", live, "ready" if live else None, engine))
    return observation


def desired(replicas: int = 3, spec: str = "new") -> rp.Desired:
    return rp.Desired(service="web", spec_hash=spec, replicas=replicas)


def test_a_new_generation_keeps_each_slot_on_the_engine_of_the_host_it_replaces():
    observation = observed(("web-1-1", "rig3", True), ("web-1-2", "rig1", True), ("web-1-3", "rig2", True))
    plan = rp.plan_rollout(observation, desired())
    placed, placement = place_hosts(fleet(), plan, observation)
    assert placed == {"web-2-1": "rig3", "web-2-2": "rig1", "web-2-3": "rig2"}
    assert placement is not None and placement.moved == []


def test_a_first_rollout_spreads_evenly_filling_engines_in_declaration_order():
    plan = rp.plan_rollout([], desired(replicas=4))
    placed, placement = place_hosts(fleet(), plan, [])
    assert placed == {"web-1-1": "rig1", "web-1-2": "rig1", "web-1-3": "rig2", "web-1-4": "rig3"}
    assert placement is not None and placement.counts == {"rig1": 2, "rig2": 1, "rig3": 1}


def test_scaling_up_places_only_the_new_hosts_where_there_is_room():
    observation = observed(("web-1-1", "rig1", True), ("web-1-2", "rig2", True))
    observation[:] = [rp.Host(host.name, host.generation, host.index, "new", True, "ready", host.engine)
                      for host in observation]
    plan = rp.plan_rollout(observation, desired(replicas=3))
    assert plan.kind == "scale"
    placed, _placement = place_hosts(fleet(), plan, observation)
    assert placed == {"web-1-3": "rig3"}


def test_a_restored_generation_stays_on_the_engines_its_hosts_are_on():
    observation = observed(("web-2-1", "rig1", True), ("web-2-2", "rig2", True), ("web-2-3", "rig3", True),
                           ("web-1-1", "rig2", False), ("web-1-2", "rig3", False), ("web-1-3", "rig1", False))
    hosts = [rp.Host(host.name, host.generation, host.index, "new" if host.generation == 1 else "old", host.running,
                     host.balancer_state, host.engine) for host in observation]
    observation[:] = hosts
    plan = rp.plan_rollout(hosts, desired())
    assert plan.kind == "restore"
    placed, placement = place_hosts(fleet(), plan, observation)
    assert placed == {"web-1-1": "rig2", "web-1-2": "rig3", "web-1-3": "rig1"} and placement is None


def test_an_engine_down_is_named_unless_its_share_goes_to_the_others():
    observation = observed(("web-1-1", "rig1", True), ("web-1-3", "rig3", True))
    plan = rp.plan_rollout(observation, desired())
    with pytest.raises(InfraError, match=r"Engine\(s\) rig2 cannot be reached"):
        place_hosts(fleet(down={"rig2": "refused"}), plan, observation)
    placed, placement = place_hosts(fleet(down={"rig2": "refused"}, place_down_share=True), plan, observation)
    assert "rig2" not in placed.values() and sorted(placed) == ["web-2-1", "web-2-2", "web-2-3"]
    assert placement is not None and placement.counts["rig2"] == 0


class Verdicts:
    def __init__(self, labels: dict[str, str] | None) -> None:
        self.labels = labels

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return self.labels


def verdict(result: str, time: str) -> dict[str, str]:
    return {"immutable.infra.verdict": result, "immutable.infra.time": time}


def test_the_gate_takes_the_newest_verdict_of_any_engine():
    passed_on_rig2 = Fleet(ENGINES, {"rig1": Verdicts(None), "rig2": Verdicts(verdict("passed", "2026-01-02")),  # type: ignore[dict-item]
                                     "rig3": Verdicts(None)})
    require_fleet_verified(passed_on_rig2, IMAGE, IMAGE)
    failed_later = Fleet(ENGINES, {"rig1": Verdicts(verdict("failed", "2026-01-03")),  # type: ignore[dict-item]
                                   "rig2": Verdicts(verdict("passed", "2026-01-02"))})
    with pytest.raises(InfraError, match="failed verification at 2026-01-03 .recorded on engine rig1"):
        require_fleet_verified(failed_later, IMAGE, IMAGE)
    with pytest.raises(InfraError, match=r"no passing verdict on any of the engines \(rig1\)"):
        require_fleet_verified(Fleet(ENGINES, {"rig1": Verdicts(None)}), "web:1", IMAGE)  # type: ignore[dict-item]


def test_engines_on_this_machine_are_unix_and_loopback():
    far = parse_engines([{"name": "far", "docker_host": "ssh://deploy@10.0.0.5"},
                         {"name": "here", "docker_host": "unix:///var/run/docker.sock"},
                         {"name": "loop", "docker_host": "tcp://localhost:2375"}])
    assert [engine.on_this_machine for engine in far] == [False, True, True]
    # An advertised address changes where hosts are reached, not where the engine is.
    advertised = parse_engines([{"name": "here", "docker_host": "tcp://127.0.0.1:2375", "advertise_address": "10.0.0.9"}])
    assert advertised[0].on_this_machine


def test_published_hosts_are_reached_at_an_ip_address_a_host_name_is_resolved_to():
    engines = parse_engines([{"name": "named", "docker_host": "ssh://deploy@localhost"},
                             {"name": "advertised", "docker_host": "ssh://ops@localhost",
                              "advertise_address": "192.0.2.7"},
                             {"name": "here", "docker_host": "unix:///var/run/docker.sock"}])
    published = Fleet(engines, {}, addressing="published")
    assert published.endpoint_addresses() == {"named": "127.0.0.1", "advertised": "192.0.2.7", "here": None}
    assert published.bind_addresses() == {"named": "0.0.0.0", "advertised": "0.0.0.0", "here": "127.0.0.1"}
    # not looked up: not used
    assert Fleet(engines, {}, addressing="container").endpoint_addresses()["named"] == "localhost"
    unknown = parse_engines([{"name": "gone", "docker_host": "ssh://deploy@no-such-host.invalid"}])
    with pytest.raises(InfraError, match="Engine gone: its machine no-such-host.invalid .* does not resolve.*"
                                         "set advertise_address"):
        Fleet(unknown, {}, addressing="published").endpoint_addresses()
