# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revisions of a service: its rollouts in the ledger, numbered 1, 2, 3... in the order they started.

Every rollout that reached the ledger is a revision, whatever its result, so the numbers never
change once given. Pure functions over ledger records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id

ROLLOUT_KINDS = ("rollout",)
SUCCEEDED = "succeeded"


def service_revisions(records: Iterable[dict[str, Any]], service: str) -> list[dict[str, Any]]:
    """The service's rollout records, oldest first, each with its `revision` number added."""
    rollouts = [record for record in records if record.get("kind") in ROLLOUT_KINDS and record.get("service") == service]
    rollouts.sort(key=lambda record: record.get("time") or "")  # ledgers merged from several controllers
    return [dict(record, revision=number) for number, record in enumerate(rollouts, start=1)]


def rollback_target(revisions: list[dict[str, Any]], live_image_id: str | None,
                    revision: int | None = None) -> dict[str, Any]:
    """The revision to roll back to: the one asked for, else the newest successful one whose image is
    not the live image. When the newest successful revision is a rollback whose image is live, it is the
    target itself (nothing to do): the same rollback run again does not roll forward again."""
    if not revisions:
        raise InfraError("The ledger has no rollout of this service, so there is no revision to roll back to; "
                         "check the service name and the ledger path.")
    if revision is not None:
        matching = [entry for entry in revisions if entry["revision"] == revision]
        if not matching:
            raise InfraError(f"Revision {revision} does not exist; this service has revisions 1 to "
                             f"{revisions[-1]['revision']}.")
        if matching[0].get("result") != SUCCEEDED:
            raise InfraError(f"Revision {revision} did not succeed ({matching[0].get('result')}); roll back to a "
                             "revision that was live.")
        return matching[0]
    succeeded = [entry for entry in revisions if entry.get("result") == SUCCEEDED]
    if succeeded and succeeded[-1].get("rollback_to_revision") and succeeded[-1].get("image_id") == live_image_id:
        return succeeded[-1]
    for entry in reversed(revisions):
        if entry.get("result") == SUCCEEDED and entry.get("image_id") != live_image_id:
            return entry
    live = f" than the live image {short_id(live_image_id)}" if live_image_id else ""
    raise InfraError(f"No successful revision with another image{live} exists to roll back to.")


def recently_live_generations(records: Iterable[dict[str, Any]]) -> list[int]:
    """Generations in the order they were last made live by a successful rollout, restore or rollback of
    the service, most recent first: what retention keeps, whatever restores happened in between."""
    succeeded = sorted((record for record in records if record.get("result") == SUCCEEDED
                        and isinstance(record.get("generation"), int)),
                       key=lambda record: record.get("time") or "", reverse=True)
    order: list[int] = []
    for record in succeeded:
        if record["generation"] not in order:
            order.append(record["generation"])
    return order
