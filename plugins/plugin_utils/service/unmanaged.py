# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts a change cannot manage: those on engines that were down when it began, whose share it placed on
the other engines (place_down_share). Such a host is neither stopped nor replaced by the change; it may
still run and serve (a Docker engine that is down leaves its containers running). Pure functions: what
is known of them comes from the ledger (where the last successful change left each host) and from the
balancer (servers kept because their own health check still passes, membership.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.base import Member

SUCCEEDED = "succeeded"


def last_known_engines(records: Iterable[dict[str, Any]], service: str) -> dict[str, str]:
    """Host -> engine of the hosts the newest successful change of the service left live (its `live`, and
    the unmanaged hosts it reported), each host's engine from the newest record that placed it."""
    succeeded = sorted((record for record in records if record.get("service") == service
                        and record.get("result") == SUCCEEDED), key=lambda record: record.get("time") or "",
                       reverse=True)
    if not succeeded:
        return {}
    newest = succeeded[0]
    unmanaged = {entry["host"]: entry["engine"] for entry in (newest.get("unmanaged") or {}).get("hosts", [])
                 if isinstance(entry, dict) and entry.get("host") and entry.get("engine")}
    known: dict[str, str] = {}
    for host in [*(newest.get("live") or []), *unmanaged]:
        engine = unmanaged.get(host) or next((record["placement"][host] for record in succeeded
                                              if isinstance(record.get("placement"), dict)
                                              and host in record["placement"]), None)
        if engine:
            known[host] = engine
    return known


def report(down: Mapping[str, str], known: Mapping[str, str], kept: Sequence[Member]) -> dict[str, Any]:
    """What the result and the ledger say about the engines down at the start: each engine and why, the
    hosts last known there, and the servers the balancer keeps because their check still passes.

    A host's state is `running` when the balancer's check still reaches as many kept servers as its
    engine had hosts (with one engine down every kept server is its; with several, none can be told
    apart), `unknown` otherwise."""
    hosts = sorted((host, engine) for host, engine in known.items() if engine in down)
    answering = {engine: (len(kept) if len(down) == 1 else 0) for engine in down}
    counts = {engine: sum(1 for _host, where in hosts if where == engine) for engine in down}
    return {
        "engines": dict(down),
        "hosts": [{"host": host, "engine": engine,
                   "state": "running" if answering[engine] >= counts[engine] else "unknown"}
                  for host, engine in hosts],
        "servers": [{"server": server.name, "address": server.address, "port": server.port} for server in kept],
    }
