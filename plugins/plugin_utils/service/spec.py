# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a service's hosts are made from: the service's name and the spec every host carries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, canonical_json, sha256_hex
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import HostLabels

# A DNS label that may also hold '_': how people name services (Compose, Kubernetes and balancers take '-').
SERVICE_PATTERN = re.compile(r"^[a-z]([a-z0-9_-]{0,61}[a-z0-9])?$")
SERVICE_MAX_LENGTH = 63


def validate_service(service: object) -> str:
    text = service if isinstance(service, str) else ""
    if not SERVICE_PATTERN.fullmatch(text) or len(text) > SERVICE_MAX_LENGTH:
        shown = repr(service)[:80]
        raise InfraError(f"service {shown} must start with a lower-case letter, end with a letter or digit and hold "
                         f"only lower-case letters, digits, '-' and '_' (at most {SERVICE_MAX_LENGTH}); it names "
                         "hosts, inventory groups and balancer servers.")
    return text


@dataclass(frozen=True)
class HostSpec:
    """Everything a host of a service is made from. Hosts carry it in labels, so a later rollback or
    heal can make more of them without being told again. image_id is the verified artifact;
    container holds the settings the back-end makes each host with."""

    service: str
    image_id: str
    port: int
    container: dict[str, Any]
    health: dict[str, Any]
    inputs_hash: str = ""

    @property
    def spec_hash(self) -> str:
        return sha256_hex(canonical_json({"image_id": self.image_id, "port": self.port, "container": self.container}))

    @property
    def network(self) -> str | None:
        return (self.container.get("networks") or [None])[0]

    def labels(self, generation: int, index: int, rollout_id: str, engine: str | None = None,
               balancer: str | None = None) -> dict[str, str]:
        labels = {str(key): str(value) for key, value in (self.container.get("labels") or {}).items()}
        labels.update(HostLabels(
            service=self.service, generation=generation, index=index, image_id=self.image_id,
            spec_hash=self.spec_hash, rollout=rollout_id, port=self.port, inputs_hash=self.inputs_hash,
            spec={"port": self.port, "container": self.container, "health": self.health},
            engine=engine, balancer=balancer).to_labels())
        return labels

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> HostSpec | None:
        """The spec a host was made from, or None for hosts made another way."""
        host = HostLabels.from_labels(labels)
        if host.service is None or host.image_id is None or host.spec is None:
            return None
        try:
            return cls(host.service, host.image_id, int(host.spec["port"]), host.spec["container"],
                       host.spec["health"], host.inputs_hash or "")
        except (ValueError, KeyError, TypeError):
            return None
