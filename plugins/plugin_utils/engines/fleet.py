# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Docker engines a service runs over: reached at the start (an engine that is down is named), the
image found and gated on all of them, each new host placed on an engine, and the image shipped to
every engine that needs it before any host starts.

A fleet of one (docker_host, or nothing) is the engine named "default" and behaves as before
engines existed: no placement, no shipping, the gate on that engine. The first declared engine is
the coordinator: it holds the service's lock, journal and pending stops, so every controller sees
one lock per service whichever engines it reaches.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.signing import SIGNING_OPTIONS
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import VerdictLabels
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import EngineClients, image_presence
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import (
    ENGINES_ARGUMENT_SPEC,
    Engine,
    is_ip_address,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.placement import Placement, place_new_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.publish import publish_shipped
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import (
    DEFAULT_REPOSITORY,
    METHODS,
    Registry,
    ShipPlan,
    parse_registry,
    plan_shipping,
    ship_image,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.verdicts import copy_verdict, fleet_verdict
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp

ADDRESSING = ("container", "published")

LOCAL = "local"  # the controller's own engine (DOCKER_HOST or the default socket), where images are baked

FLEET_ARGUMENT_SPEC: dict[str, Any] = {
    **ENGINES_ARGUMENT_SPEC,
    "registry": {"type": "dict", "options": {
        "address": {"type": "str", "required": True},
        "repository": {"type": "str", "default": DEFAULT_REPOSITORY},
        "ca_cert": {"type": "path"},
        "username": {"type": "str"},
        "password": {"type": "str", "no_log": True},
        **SIGNING_OPTIONS,
    }},
    "image_transfer": {"type": "str", "default": "auto", "choices": list(METHODS)},
    "place_down_share": {"type": "bool", "default": False},
    "addressing": {"type": "str", "choices": list(ADDRESSING)},
}
FLEET_OPTION_NAMES = tuple(FLEET_ARGUMENT_SPEC)


def default_addressing(engines: Sequence[Engine]) -> str:
    return "container" if all(engine.on_this_machine for engine in engines) else "published"


def resolved_address(engine: Engine) -> str | None:
    """The engine's address as an IP address (balancer servers take IP addresses): a host name is looked up
    here, IPv4 first."""
    address = engine.address
    if address is None or is_ip_address(address):
        return address
    try:
        found = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except OSError as error:
        raise InfraError(f"Engine {engine.name}: its machine {address} (from docker_host) does not resolve to an "
                         f"address ({error.strerror or error}), and the balancer needs one for its hosts; set "
                         "advertise_address. Nothing was changed.") from None
    return str(sorted(found, key=lambda entry: entry[0] != socket.AF_INET)[0][4][0])


@dataclass
class Fleet:
    engines: list[Engine]
    clients: dict[str, DockerClient]  # the engines that answer, in declaration order
    down: dict[str, str] = field(default_factory=dict)
    addressing: str = "container"
    registry: Registry | None = None
    transfer: str = "auto"
    place_down_share: bool = False
    local: DockerClient | None = None  # the controller's engine, when it is not one of the fleet's
    _addresses: dict[str, str | None] | None = field(default=None, repr=False)

    @property
    def single(self) -> bool:
        return len(self.engines) == 1

    @property
    def coordinator_name(self) -> str:
        return self.engines[0].name

    @property
    def coordinator(self) -> DockerClient:
        """The first declared engine: it holds the lock, the journal and the pending stops."""
        self.require_coordinator()
        return self.clients[self.coordinator_name]

    def require_coordinator(self) -> None:
        if self.coordinator_name not in self.clients:
            raise InfraError(f"Engine {self.coordinator_name} cannot be reached ({self.down.get(self.coordinator_name)}); "
                             "it is the first in engines, so it holds the service's lock and journal, and no rollout "
                             "can run without it (place_down_share does not apply to it). Nothing was changed.",
                             engines_down=sorted(self.down))

    def endpoint_addresses(self) -> dict[str, str | None]:
        """Where each engine's published ports are reached (an IP address: balancer servers take those)."""
        if self._addresses is None:
            published = self.addressing == "published"
            self._addresses = {engine.name: resolved_address(engine) if published else engine.address
                               for engine in self.engines}
        return self._addresses

    def bind_addresses(self) -> dict[str, str]:
        """The address each engine binds published ports to."""
        return {engine.name: engine.bind_address for engine in self.engines}

    def sources(self) -> dict[str, DockerClient]:
        """Every engine an image may be found on: the controller's own first (where bakes run), then the fleet."""
        return {**({LOCAL: self.local} if self.local else {}), **self.clients}

    def describe(self) -> list[dict[str, Any]]:
        return [dict(engine.as_dict(), up=engine.name in self.clients, coordinator=engine.name == self.coordinator_name)
                for engine in self.engines]


def open_fleet(params: Mapping[str, Any], engines: list[Engine], reached: EngineClients) -> Fleet:
    """The task's fleet from its engines as FleetManager reached them. An engine that does not answer is
    an error naming it, unless place_down_share."""
    registry = parse_registry(params.get("registry"))
    transfer = params.get("image_transfer") or "auto"
    if transfer == "registry" and registry is None:
        raise InfraError("image_transfer is registry but no registry is set; give registry.address (host:port) "
                         "or use image_transfer: stream.")
    addressing = params.get("addressing") or default_addressing(engines)
    fleet = Fleet(engines, reached.clients, reached.down, addressing, registry, transfer,
                  bool(params.get("place_down_share")))
    if params.get("engines") is None:
        return fleet
    if reached.down and not fleet.place_down_share:
        reached.require_all()
    fleet.require_coordinator()
    if not reached.clients:
        reached.require_all()
    fleet.local = _local_engine(engines)
    return fleet


def _local_engine(engines: Sequence[Engine]) -> DockerClient | None:
    """The controller's own engine, as a place to find images baked there; None when it is a fleet engine
    or does not answer (then images are looked for on the fleet's engines only)."""
    try:
        local = DockerClient()
    except InfraError:
        return None
    if any(engine.docker_host == local.where for engine in engines):
        local.close()
        return None
    return local


# the image and its gate ------------------------------------------------------------------------------
def find_image(fleet: Fleet, reference: str) -> dict[str, Any]:
    """The image's inspect data from the first engine that has it (the controller's own first)."""
    for client in fleet.sources().values():
        inspected = client.image(reference)
        if inspected is not None:
            return inspected
    where = ", ".join(fleet.sources())
    raise InfraError(f"Image '{reference}' is on none of the engines ({where}); bake it (immutable.infra.bake) "
                     "or give an image ID that exists.")


def require_fleet_verified(fleet: Fleet, reference: str, image_id: str) -> None:
    """The gate over every engine: the newest verdict recorded on any of them must be a pass. Where
    verify ran does not matter; a failed re-verification anywhere outweighs an older pass elsewhere."""
    found = fleet_verdict(fleet.sources(), image_id)
    described = reference if reference == image_id else f"'{reference}' (now {short_id(image_id)})"
    if found is None:
        raise InfraError(f"Image {described} has no passing verdict on any of the engines "
                         f"({', '.join(fleet.sources())}). Run immutable.infra.verify on it first, or set "
                         "require_verified: false to roll out an unverified image deliberately.")
    engine, labels = found
    verdict = VerdictLabels.from_labels(labels)
    if not verdict.passed:
        raise InfraError(f"Image {described} failed verification at {verdict.time or '?'} (recorded on engine "
                         f"{engine}); fix it, bake again and verify the new image.")


# placement and shipping --------------------------------------------------------------------------------
def place_hosts(fleet: Fleet, plan: rp.Plan, observed: Sequence[rp.Host]) -> tuple[dict[str, str], Placement | None]:
    """The engine of every host the plan starts (placement.place_new_hosts)."""
    return place_new_hosts(fleet.engines, fleet.down, fleet.place_down_share, plan, observed)


def plan_ship(fleet: Fleet, image_id: str, engines_needed: Sequence[str]) -> ShipPlan | None:
    """How the image reaches the engines new hosts start on (None for a fleet of one)."""
    if fleet.single:
        return None
    needed = list(dict.fromkeys(name for name in engines_needed if name in fleet.clients))
    return plan_shipping(image_id, image_presence(fleet.sources(), image_id), needed, fleet.registry, fleet.transfer)


def ship(fleet: Fleet, plan: ShipPlan | None, progress: Callable[[str], None]) -> dict[str, Any] | None:
    """Ships the image where the plan says, and its verdict with it; before any host starts."""
    if plan is None:
        return None
    result = ship_image(plan, fleet.sources(), fleet.registry, progress)
    attestations = publish_shipped(fleet.sources(), plan, result.digest, fleet.registry, progress)
    if plan.targets:
        copy_verdict(fleet.sources(), plan.image_id, plan.targets)
        progress(f"image {short_id(plan.image_id)} is on {', '.join(plan.targets)} now "
                 f"({result.seconds:.1f} s, {plan.method})")
    return dict(result.as_dict(), attestations=attestations)
