# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rollout keeps its service's record (service/record.py) on every engine it runs on, and on the
controller's own engine, so that a module given only the service's name finds it from any of them."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_store import DockerStore
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.fleet import Fleet
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import (
    read_record,
    record_changes,
    record_of,
    write_record,
)


def keep_service_record(fleet: Fleet, service: str, params: dict[str, Any], ledger: Ledger | None,
                        basedir: str | None, check_mode: bool = False) -> dict[str, Any]:
    """Writes the record where it is missing or differs; what changed (option -> before and after), noted
    in the ledger as a `service` record. Nothing is written in check mode."""
    record = record_of(service, params)
    stores = [DockerStore(client, "") for client in [*fleet.clients.values(), *([fleet.local] if fleet.local else [])]]
    changes = record_changes(read_record(stores[0], service), record)
    stale = [store for store in stores if read_record(store, service) != record]
    if check_mode or not stale:
        return changes if stale else {}
    write_record(stale, record)
    if changes and ledger:
        ledger.append(ledger.new_record("service", basedir, service=service, changes=changes,
                                        result="succeeded", finished=utc_timestamp()))
    return changes
