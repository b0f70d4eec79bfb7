# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Balancer membership as a service change sees it: which host is in, add, drain, take out.

`Balancer` is the whole interface the rest of the collection uses; one class per balancer kind
implements it in this area (haproxy_backend.py), and make_balancer picks it from the options. Without
a balancer (NoBalancer) every running host counts as live and the membership steps do nothing.

A batch of hosts comes and goes together, so every change also exists for many servers at once (the
*_all methods): a balancer that can take several changes in one exchange (HAProxy's runtime API, one
connection for all the commands) does so; the answer says, host by host, what came of each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

BALANCER_KINDS = ("haproxy",)
BALANCER_OPTIONS: dict[str, Any] = {
    "type": {"type": "str", "default": "haproxy", "choices": list(BALANCER_KINDS)},
    "runtime_api": {"type": "str", "required": True},
    "backend": {"type": "str", "required": True},
    "server_options": {"type": "list", "elements": "str", "default": ["inter", "500ms", "rise", "1", "fall", "2"]},
    "up_timeout": {"type": "float", "default": 30},
    "trust_gate": {"type": "bool", "default": True},
}


@dataclass(frozen=True)
class Member:
    """One server of the balancer that belongs to a service: its name, where it sends traffic, whether it
    takes traffic (ready), takes no new sessions (drain) or none at all (maint), and whether the
    balancer's own health check passes there."""

    name: str
    address: str
    port: int
    admin_state: str
    answering: bool = False  # the balancer's own health check passes at its address


@dataclass(frozen=True)
class Arrival:
    """A host coming into the balancer: its name, where it answers, and its server once registered."""

    host: str
    address: str
    port: int
    server: str | None = None


Outcome = str | InfraError  # a server's name, or why the change was refused for that host


class Balancer(Protocol):
    name: str  # said in progress lines and errors, e.g. "haproxy backend web"
    tracks_membership: bool  # False: no balancer, a running host counts as taking traffic

    def check(self) -> None:
        """Fails with a sentence when the balancer cannot be reached or does not know the backend."""

    def members(self, is_ours: Callable[[str], bool]) -> list[Member]:
        """The servers that belong to the service (is_ours tells its host names)."""

    def lost(self, expected: Mapping[str, tuple[str, int]]) -> list[str]:
        """Of the servers expected to take traffic at their endpoints, those the balancer no longer has there."""

    def register(self, host: str, address: str, port: int) -> str:
        """Adds the host taking no traffic yet; returns its server name."""

    def activate(self, server: str, host: str, address: str, port: int) -> str:
        """Lets traffic in once the server is up (its name, which may change); takes it out on failure."""

    def set_state(self, server: str, state: str) -> None:
        """ready, drain or maint."""

    def wait_drained(self, server: str, timeout: float) -> bool:
        """True once the server has no sessions left; False when timeout passed first."""

    def detach(self, server: str) -> None:
        """Takes the server out."""

    def register_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        """register for every host, in one exchange where the balancer allows: per host, in order, its
        server's name or why it could not be added."""

    def activate_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        """activate for every registered host (arrival.server) at once: per host, in order, its server's
        name once it takes traffic, or why not (its server then taken out again)."""

    def set_states(self, servers: Sequence[str], state: str) -> None:
        """set_state for every server, in one exchange; raises the first refusal after trying them all."""

    def wait_all_drained(self, servers: Sequence[str], timeout: float) -> list[str]:
        """Waits until none of the servers has sessions left; those that still had some after timeout."""

    def detach_all(self, servers: Sequence[str]) -> None:
        """detach for every server, in one exchange; raises the first refusal after trying them all."""

    def describe(self) -> dict[str, Any]:
        """The options that reach this balancer again, for the service record (no secrets)."""


class NoBalancer:
    """For services without a balancer: membership is simply 'running'."""

    name = "no balancer"
    tracks_membership = False

    def check(self) -> None:
        return None

    def members(self, is_ours: Callable[[str], bool]) -> list[Member]:
        return []

    def lost(self, expected: Mapping[str, tuple[str, int]]) -> list[str]:
        return []

    def register(self, host: str, address: str, port: int) -> str:
        return host

    def activate(self, server: str, host: str, address: str, port: int) -> str:
        return server

    def set_state(self, server: str, state: str) -> None:
        return None

    def wait_drained(self, server: str, timeout: float) -> bool:
        return True

    def detach(self, server: str) -> None:
        return None

    def register_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        return [arrival.host for arrival in arrivals]

    def activate_all(self, arrivals: Sequence[Arrival]) -> list[Outcome]:
        return [arrival.server or arrival.host for arrival in arrivals]

    def set_states(self, servers: Sequence[str], state: str) -> None:
        return None

    def wait_all_drained(self, servers: Sequence[str], timeout: float) -> list[str]:
        return []

    def detach_all(self, servers: Sequence[str]) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}


def first_refusal(outcomes: Sequence[Outcome]) -> None:
    """Raises the first InfraError among per-host outcomes."""
    for outcome in outcomes:
        if isinstance(outcome, InfraError):
            raise outcome


def make_balancer(options: Mapping[str, Any] | None) -> Balancer:
    """The balancer the options describe (the module's balancer option), or NoBalancer without them."""
    if not options:
        return NoBalancer()
    from ansible_collections.immutable.infra.plugins.plugin_utils.balancer.haproxy_backend import HAProxyBalancer
    return HAProxyBalancer(dict(options))
