# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Volumes, the records the collection keeps on the engine (verdicts, journals, notes): create,
replace, list by label, read their labels, remove."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import APIError, NotFound, SDKCalls


class VolumeCalls(SDKCalls):
    def create_volume(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        with self.answering():
            return self._api.create_volume(name, labels=labels)

    def volumes(self, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        """The engine's answer: its records under Volumes (None when there are none) and Warnings."""
        with self.answering():
            return self._api.volumes(filters=filters)

    def inspect_volume(self, name: str) -> dict[str, Any]:
        with self.answering():
            return self._api.inspect_volume(name)

    def remove_volume(self, name: str, force: bool = False) -> None:
        with self.answering():
            self._api.remove_volume(name, force=force)


class Volumes:
    api: VolumeCalls

    def replace_volume(self, name: str, labels: dict[str, str]) -> None:
        self.remove_volume(name)
        self.create_volume(name, labels)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Creates a volume; one that exists already keeps its labels (the engine's rule)."""
        try:
            self.api.create_volume(name, labels=labels)
        except APIError as error:
            raise InfraError(f"Docker could not create volume {name}: {error.explanation}") from None

    def volumes_matching(self, label: str, value: str) -> list[dict[str, Any]]:
        """The engine's records (Name, Labels, CreatedAt...) of the volumes whose label has the value."""
        try:
            return self.api.volumes(filters={"label": f"{label}={value}"}).get("Volumes") or []
        except APIError as error:
            raise InfraError(f"Docker could not list volumes: {error.explanation}") from None

    def remove_volume(self, name: str) -> None:
        try:
            self.api.remove_volume(name, force=True)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code != 404:
                raise InfraError(f"Docker could not remove volume {name}: {error.explanation}") from None

    def volume_labels(self, name: str) -> dict[str, str] | None:
        try:
            return self.api.inspect_volume(name).get("Labels") or {}
        except NotFound:
            return None
        except APIError as error:
            if error.status_code == 404:
                return None
            raise InfraError(f"Docker could not inspect volume {name}: {error.explanation}") from None

    def volumes_with_label(self, label: str, value: str | None = None) -> list[dict[str, str]]:
        selector = label if value is None else f"{label}={value}"
        volumes = self.api.volumes(filters={"label": selector}).get("Volumes") or []
        return [volume.get("Labels") or {} for volume in volumes]
