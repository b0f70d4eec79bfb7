"""Hosts on engines down at the start (place_down_share): what the ledger and the balancer say of them, and
servers kept because their check still passes."""

from __future__ import annotations

from memory_backend import MemoryBackend, MemoryBalancer

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Member
from ansible_collections.immutable.infra.plugins.plugin_utils.service import membership, unmanaged


def record(time, live, placement=None, result="succeeded", service="web", lost=None):
    entry = {"kind": "rollout", "service": service, "time": time, "result": result, "live": live}
    if placement is not None:
        entry["placement"] = placement
    if lost is not None:
        entry["unmanaged"] = {"hosts": lost}
    return entry


def test_the_last_known_engine_of_each_live_host_comes_from_the_newest_record_that_placed_it():
    records = [
        record("t1", ["web-1-1", "web-1-2"], {"web-1-1": "a", "web-1-2": "b"}),
        record("t2", ["web-1-1", "web-1-2", "web-1-3"], {"web-1-3": "a"}),  # a scale: only the new host placed
        record("t3", ["web-2-1"], {"web-2-1": "b"}, result="rolled back"),
        record("t2", ["other-1-1"], {"other-1-1": "a"}, service="other"),
    ]
    assert unmanaged.last_known_engines(records, "web") == {"web-1-1": "a", "web-1-2": "b", "web-1-3": "a"}
    assert unmanaged.last_known_engines([], "web") == {}


def test_hosts_reported_unmanaged_stay_known_while_their_engine_is_down():
    records = [record("t1", ["web-1-1", "web-1-2"], {"web-1-1": "a", "web-1-2": "b"}),
               record("t2", ["web-2-1", "web-2-2"], {"web-2-1": "a", "web-2-2": "a"},
                      lost=[{"host": "web-1-2", "engine": "b", "state": "running"}])]
    assert unmanaged.last_known_engines(records, "web") == {"web-2-1": "a", "web-2-2": "a", "web-1-2": "b"}


def test_a_host_counts_as_running_while_the_balancer_still_reaches_as_many_servers_on_its_engine():
    kept = [Member("slot2", "10.0.2.5", 8000, "ready", answering=True)]
    known = {"web-1-1": "a", "web-1-2": "b"}
    assert unmanaged.report({"b": "refused"}, known, kept) == {
        "engines": {"b": "refused"}, "hosts": [{"host": "web-1-2", "engine": "b", "state": "running"}],
        "servers": [{"server": "slot2", "address": "10.0.2.5", "port": 8000}]}
    assert unmanaged.report({"b": "refused"}, {**known, "web-1-3": "b"}, kept)["hosts"][0]["state"] == "unknown"
    two_down = unmanaged.report({"a": "x", "b": "y"}, known, kept)  # which engine a kept server is on is unknown
    assert [host["state"] for host in two_down["hosts"]] == ["unknown", "unknown"]


def test_a_server_that_answers_is_kept_while_an_engine_is_down_and_stale_otherwise():
    backend = MemoryBackend("web", ["a", "b"])
    balancer = MemoryBalancer()
    balancer.servers = {"web-1-1": Member("web-1-1", "10.0.2.5", 8000, "ready", answering=True),
                        "web-1-2": Member("web-1-2", "10.0.2.6", 8000, "ready", answering=False)}
    everything = membership.observe(backend, balancer, {}, lambda line: None)
    assert everything.stale_servers == ["web-1-1", "web-1-2"] and everything.unmanaged_servers == []
    with_down = membership.observe(backend, balancer, {}, lambda line: None, unlisted=["b"])
    assert with_down.stale_servers == ["web-1-2"]
    assert [server.name for server in with_down.unmanaged_servers] == ["web-1-1"]
