# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A service's store (service/store.py) on a Docker engine: markers are never-started containers (the
engine refuses a second container of the same name, atomically), records are volumes with labels.
Times are the engine's own (creation times and its clock)."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import parse_rfc3339
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.service.store import Entry


class DockerStore:
    def __init__(self, client: DockerClient, marker_image: str) -> None:
        """marker_image: an image on the engine to make marker containers from (they never start)."""
        self.client = client
        self.marker_image = marker_image
        self.where = client.where

    def create_marker(self, name: str, labels: dict[str, str]) -> str | None:
        return self.client.create_marker(name, self.marker_image, labels)

    def marker(self, name: str) -> Entry | None:
        inspected = self.client.container(name)
        if inspected is None:
            return None
        return Entry(name, inspected["Id"], _time(inspected.get("Created")),
                     (inspected.get("Config") or {}).get("Labels") or {})

    def remove_marker(self, marker_id: str) -> None:
        self.client.remove_container(marker_id)

    def put(self, name: str, labels: dict[str, str]) -> None:
        self.client.create_volume(name, labels)

    def replace(self, name: str, labels: dict[str, str]) -> None:
        self.client.replace_volume(name, labels)

    def get(self, name: str) -> dict[str, str] | None:
        return self.client.volume_labels(name)

    def find(self, label: str, value: str) -> list[Entry]:
        return [Entry(volume["Name"], volume["Name"], _time(volume.get("CreatedAt")), volume.get("Labels") or {})
                for volume in self.client.volumes_matching(label, value)]

    def remove(self, name: str) -> None:
        self.client.remove_volume(name)

    def now(self) -> float:
        return self.client.engine_time()


def _time(text: str | None) -> float | None:
    try:
        return parse_rfc3339(text or "")
    except ValueError:
        return None
