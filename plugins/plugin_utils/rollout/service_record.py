# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A rollout keeps its service's record (service/record.py) on every engine it runs on, and on the
controller's own Docker engine, so that a module given only the service's name finds it from any of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import utc_timestamp
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.service.record import (
    read_record,
    record_changes,
    record_of,
    write_record,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import ServiceStore


def keep_service_record(stores: Sequence[ServiceStore], service: str, params: dict[str, Any], ledger: Ledger | None,
                        basedir: str | None, check_mode: bool = False) -> dict[str, Any]:
    """Writes the record where it is missing or differs in the stores (the back-end's record_stores(), the
    first one the coordinator's); what changed (option -> before and after), noted in the ledger as a
    `service` record. Nothing is written in check mode."""
    record = record_of(service, params)
    changes = record_changes(read_record(stores[0], service), record)
    stale = [store for store in stores if read_record(store, service) != record]
    if check_mode or not stale:
        return changes if stale else {}
    write_record(stale, record)
    if changes and ledger:
        ledger.append(ledger.new_record("service", basedir, service=service, changes=changes,
                                        result="succeeded", finished=utc_timestamp()))
    return changes
