# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a service's coordination records live: its lock, journal, pending stops and service record.

They live beside the hosts, on the back-end's coordinating engine, so that every controller reaching
it sees them. A store needs two kinds of object:
- markers, whose creation is atomic and fails when the name is taken (the lock);
- records, named label sets (journal, leases, stop notes, pending stops, the service record).
Both carry the store's own creation time, so controllers with skewed clocks agree (the lease).
The Docker back-end keeps markers as never-started containers and records as volumes
(engines/docker_store.py); tests/unit/service/memory.py keeps them in dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Entry:
    """A marker or record as the store holds it."""

    name: str
    id: str
    created: float | None  # the store's clock, epoch seconds; None when it cannot be read
    labels: dict[str, str]


class ServiceStore(Protocol):
    where: str  # how the store's engine is reached, as errors name it

    def create_marker(self, name: str, labels: dict[str, str]) -> str | None:
        """Creates the marker and returns its ID, or None when a marker of that name exists (atomic)."""

    def marker(self, name: str) -> Entry | None:
        """The marker of that name, or None."""

    def remove_marker(self, marker_id: str) -> None:
        """Removes a marker by ID (never another one that took its name since)."""

    def put(self, name: str, labels: dict[str, str]) -> None:
        """Creates a record (nothing happens when it exists)."""

    def replace(self, name: str, labels: dict[str, str]) -> None:
        """Creates the record, or replaces the one of that name."""

    def get(self, name: str) -> dict[str, str] | None:
        """The labels of the record of that name, or None."""

    def find(self, label: str, value: str) -> list[Entry]:
        """The records carrying the label with that value."""

    def remove(self, name: str) -> None:
        """Removes the record of that name, if any."""

    def now(self) -> float:
        """The store's clock, epoch seconds."""
