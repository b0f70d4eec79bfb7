# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service record: where a service runs (its engines, its balancer, how hosts are reached), as its
last rollout was told, kept in the store beside its hosts so that every later module and every
controller needs only the service's name.

Options given to a module win over the record; the ones not given come from it. A rollout writes it
(on every engine of the service, so any of them leads to the rest) and the ledger notes each change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_BALANCER,
    ServiceRecordLabels,
    service_record_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore

RECORD_OPTIONS = ("engines", "docker_host", "balancer", "addressing")
WHERE_OPTIONS = ("engines", "engines_group", "docker_host")  # any of these given: the engines are the task's own


def record_of(service: str, params: Mapping[str, Any]) -> ServiceRecordLabels:
    """What a rollout given these options records (engines as declared, the balancer's options)."""
    return ServiceRecordLabels(service=service, engines=params.get("engines"), docker_host=params.get("docker_host"),
                               balancer=dict(params["balancer"]) if params.get("balancer") else None,
                               addressing=params.get("addressing"))


def read_record(store: ServiceStore, service: str) -> ServiceRecordLabels | None:
    labels = store.get(service_record_name(service))
    return ServiceRecordLabels.from_labels(labels) if labels is not None else None


def write_record(stores: Iterable[ServiceStore], record: ServiceRecordLabels) -> None:
    for store in stores:
        if read_record(store, record.service or "") != record:
            store.replace(service_record_name(record.service or ""), record.to_labels())


def record_changes(before: ServiceRecordLabels | None, after: ServiceRecordLabels) -> dict[str, Any]:
    """Option -> {"before", "after"} for what differs (everything, when there was no record)."""
    old = _options(before) if before else {}
    new = _options(after)
    return {name: {"before": old.get(name), "after": new.get(name)} for name in RECORD_OPTIONS
            if old.get(name) != new.get(name)}


def _options(record: ServiceRecordLabels) -> dict[str, Any]:
    return {"engines": record.engines, "docker_host": record.docker_host, "balancer": record.balancer,
            "addressing": record.addressing}


def with_record(params: dict[str, Any], record: ServiceRecordLabels | None,
                names: Iterable[str] = RECORD_OPTIONS) -> dict[str, Any]:
    """The params with the options the task did not give taken from the record. Where the service runs
    (engines or docker_host) comes from the record only when the task names no engine at all."""
    if record is None:
        return params
    merged = dict(params)
    recorded = _options(record)
    own_engines = any(params.get(name) for name in WHERE_OPTIONS)
    for name in names:
        if name in ("engines", "docker_host") and own_engines:
            continue
        if merged.get(name) is None and recorded.get(name) is not None:
            merged[name] = recorded[name]
    return merged


def require_balancer_known(service: str, balancer_given: bool, host_labels: Iterable[Mapping[str, str]]) -> None:
    """Refuses a change that would leave a balancer untrue: no balancer is given or recorded, but hosts of
    the service were made to join one."""
    if balancer_given:
        return
    joined = sorted({labels[LABEL_BALANCER] for labels in host_labels if labels.get(LABEL_BALANCER)})
    if joined:
        raise InfraError(f"Hosts of {service} were put in a balancer ({', '.join(joined)}), but no balancer is given "
                         "and the service has no record of it on its engine; give the balancer option (runtime_api "
                         "and backend), so that the balancer keeps pointing at the running hosts. Nothing was "
                         "changed.")
