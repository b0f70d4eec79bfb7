# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images reach every engine that needs them before any host starts.

Two ways, one identity: the image ID (the digest of the image's config) survives both.
- registry: push once from an engine that has the image, under a tag derived from its ID; pull by
  the manifest digest on each engine that lacks it; check the pulled image's ID is the source's.
- stream: `docker save` on an engine that has it, streamed into `docker load` on every engine that
  lacks it at once (one export, a bounded queue per target: never the whole image in memory).

plan_shipping is pure; ship_image applies a plan. A registry that does not answer, or that refuses
the credentials given (or asks for some when none are), is found before anything is tagged, pushed or
pulled. Credentials go to each engine with its push or pull (no `docker login` on any engine).
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import is_loopback

METHODS = ("auto", "registry", "stream")
DEFAULT_REPOSITORY = "immutable-infra/images"
SHIPPED_REPOSITORY = "immutable-infra/shipped"  # the local tag on engines that received an image (never dangling)
QUEUE_DEPTH = 8  # pieces of STREAM_CHUNK held per target at most


@dataclass(frozen=True)
class Registry:
    address: str  # host:port, as engines pull from it
    repository: str = DEFAULT_REPOSITORY
    ca_cert: str | None = None  # for a registry on another machine (TLS), when its CA is not the system's
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    signing_key: str | None = field(default=None, repr=False)  # signs what is pushed (engines/publish.py)
    signing_key_password: str | None = field(default=None, repr=False)

    @property
    def auth_config(self) -> dict[str, str] | None:
        """What the engine API takes with a push or pull (sent as X-Registry-Auth)."""
        if self.username is None or self.password is None:
            return None
        return {"username": self.username, "password": self.password, "serveraddress": self.address}

    @property
    def loopback(self) -> bool:
        return is_loopback(self.address.rsplit(":", 1)[0].strip("[]"))

    @property
    def url(self) -> str:
        # Engines talk plain HTTP to loopback registries (allowed insecure by default), TLS to any other.
        return f"{'http' if self.loopback else 'https'}://{self.address}/v2/"

    def reference(self, image_id: str) -> tuple[str, str]:
        """The repository and tag an image is pushed under: the tag is its ID."""
        return f"{self.address}/{self.repository}", ship_tag(image_id)


def ship_tag(image_id: str) -> str:
    return "sha256-" + image_id.split(":", 1)[-1]


def parse_registry(raw: Mapping[str, Any] | str | None) -> Registry | None:
    if not raw:
        return None
    if isinstance(raw, str):
        raw = {"address": raw}
    address = str(raw.get("address") or "")
    if not address or "/" in address or "://" in address:
        raise InfraError(f"Registry address {address!r} must be host:port as engines pull from it, "
                         "e.g. 127.0.0.1:5000 (no scheme, no path).")
    repository = str(raw.get("repository") or DEFAULT_REPOSITORY)
    if repository != repository.lower() or repository.startswith("/") or " " in repository:
        raise InfraError(f"Registry repository {repository!r} must be a lower-case path such as {DEFAULT_REPOSITORY}.")
    username, password = raw.get("username") or None, raw.get("password") or None
    if (username is None) != (password is None):
        raise InfraError(f"Registry {address} has a {'username' if username else 'password'} but no "
                         f"{'password' if username else 'username'}; give both, or neither for a registry "
                         "without authentication.")
    return Registry(address, repository, raw.get("ca_cert"), username, password, raw.get("signing_key") or None,
                    raw.get("signing_key_password") or None)


@dataclass
class ShipPlan:
    image_id: str
    method: str  # "none" (every engine has it), "registry" or "stream"
    source: str | None
    targets: list[str]
    present: list[str]

    def describe(self) -> str:
        if self.method == "none":
            return f"image {short_id(self.image_id)} is on every engine that needs it ({', '.join(self.present)})"
        how = "through the registry" if self.method == "registry" else "streamed (save/load)"
        return f"ship image {short_id(self.image_id)} from {self.source} to {', '.join(self.targets)} {how}"

    def as_dict(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "method": self.method, "source": self.source, "targets": self.targets,
                "present": self.present}


def plan_shipping(image_id: str, presence: Mapping[str, bool], needed: Sequence[str], registry: Registry | None,
                  method: str = "auto") -> ShipPlan:
    """presence: every engine looked at (fleet engines and, e.g., the engine that baked the image),
    preferred source first → whether it has the image. needed: the engines hosts will start on."""
    if method not in METHODS:
        raise InfraError(f"Image transfer {method!r} is not one of {', '.join(METHODS)}.")
    unknown = [name for name in needed if name not in presence]
    if unknown:
        raise InfraError(f"Engine(s) {', '.join(unknown)} were not looked at for image {short_id(image_id)}.")
    present = [name for name, has in presence.items() if has]
    targets = [name for name in needed if not presence[name]]
    if not targets:
        return ShipPlan(image_id, "none", None, [], present)
    if not present:
        raise InfraError(f"Image {image_id} is on none of the engines ({', '.join(presence)}); bake it on one of "
                         "them, or give the ID of an image that exists.")
    if method == "registry" and registry is None:
        raise InfraError("image_transfer is registry but no registry is set; give registry (host:port) or use stream.")
    chosen = "registry" if registry is not None and method != "stream" else "stream"
    return ShipPlan(image_id, chosen, present[0], targets, present)


@dataclass
class ShipResult:
    plan: ShipPlan
    seconds: float = 0.0
    digest: str | None = None
    per_engine: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.plan.as_dict(), seconds=round(self.seconds, 2), digest=self.digest,
                    per_engine={name: round(value, 2) for name, value in self.per_engine.items()})


def check_registry(registry: Registry, timeout: float = 5) -> None:
    """Raises a sentence when the registry does not answer its API base, asks for credentials that were
    not given, or refuses the ones given. Basic auth is checked here; a token registry (a Bearer
    challenge) hands out tokens to the engines themselves, so its credentials are checked by the push."""
    problem = ""
    try:
        with open_url(registry.url, timeout=timeout, use_proxy=False, ca_path=registry.ca_cert, use_netrc=False,
                      url_username=registry.username, url_password=registry.password,
                      force_basic_auth=registry.auth_config is not None):
            pass
    except urllib.error.HTTPError as error:
        challenge = (error.headers.get("WWW-Authenticate") or "").split(" ", 1)[0].lower()
        if error.code != 401:
            problem = f"HTTP {error.code}"
        elif not registry.auth_config:
            raise InfraError(f"The registry {registry.address} asks for credentials; give registry.username and "
                             "registry.password (a user allowed to push and pull). Nothing was pushed or pulled.") from None
        elif challenge == "basic":
            raise InfraError(f"The registry {registry.address} refused the credentials of user {registry.username}; "
                             "check registry.username and registry.password. Nothing was pushed or pulled.") from None
    except (OSError, ValueError, UrlConnectionError) as error:
        problem = str(getattr(error, "reason", None) or error)
    if problem:
        raise InfraError(f"The registry {registry.address} does not answer ({problem}); start it, or ship without "
                         "one (image_transfer: stream). Nothing was pushed or pulled.")


def ship_image(plan: ShipPlan, clients: Mapping[str, DockerClient], registry: Registry | None = None,
               progress: Callable[[str], None] = lambda message: None) -> ShipResult:
    result = ShipResult(plan)
    if plan.method == "none":
        return result
    started = time.monotonic()
    progress(plan.describe())
    if plan.method == "registry":
        if registry is None:
            raise InfraError("The plan ships through a registry but no registry was given.")
        check_registry(registry)
        result.digest = _through_registry(plan, clients, registry, result.per_engine)
    else:
        _streamed(plan, clients, result.per_engine)
    for target in plan.targets:
        client = clients[target]
        if client.image(plan.image_id) is None:
            raise InfraError(f"Image {plan.image_id} is still missing on engine {target} after shipping it.")
        client.tag(plan.image_id, SHIPPED_REPOSITORY, ship_tag(plan.image_id))
    result.seconds = time.monotonic() - started
    return result


def _source(plan: ShipPlan) -> str:
    if plan.source is None:
        raise InfraError(f"No engine holds image {short_id(plan.image_id)} to ship it from.")
    return plan.source


def _through_registry(plan: ShipPlan, clients: Mapping[str, DockerClient], registry: Registry,
                      timings: dict[str, float]) -> str:
    source = clients[_source(plan)]
    repository, tag = registry.reference(plan.image_id)
    inspected = source.image(plan.image_id) or {}
    had_tags = bool(inspected.get("RepoTags"))
    source.tag(plan.image_id, repository, tag)
    pushed = time.monotonic()
    try:
        digest = source.push(repository, tag, registry.auth_config)
    finally:
        if had_tags:  # the push tag would be the image's last name otherwise: untagging would delete it
            source.remove_image(f"{repository}:{tag}")
    timings[f"push from {plan.source}"] = time.monotonic() - pushed

    def pull(target: str) -> float:
        began = time.monotonic()
        client = clients[target]
        reference = f"{repository}@{digest}"
        try:
            pulled = client.pull(reference, registry.auth_config)
        except InfraError as error:
            raise InfraError(f"Engine {target} could not pull {reference}: {error.message}") from None
        if pulled["Id"] != plan.image_id:
            client.remove_image(reference)
            raise InfraError(f"Engine {target} pulled {reference} as image {short_id(pulled['Id'])}, not "
                             f"{short_id(plan.image_id)}: the registry holds another image under that name. "
                             "Nothing was rolled out.")
        return time.monotonic() - began

    _each(plan.targets, pull, timings)
    return digest


def _streamed(plan: ShipPlan, clients: Mapping[str, DockerClient], timings: dict[str, float]) -> None:
    """One `docker save` on the source feeds a `docker load` on every target at once."""
    source = clients[_source(plan)]
    end = object()
    queues: dict[str, queue.Queue] = {target: queue.Queue(maxsize=QUEUE_DEPTH) for target in plan.targets}
    failed: dict[str, BaseException] = {}
    done = threading.Event()

    def pieces(target: str) -> Iterator[bytes]:
        while True:
            piece = queues[target].get()
            if piece is end:
                return
            if isinstance(piece, BaseException):
                raise piece
            yield piece

    def load(target: str) -> float:
        began = time.monotonic()
        try:
            clients[target].load_image(pieces(target))
        except BaseException as error:
            failed[target] = error
            raise
        return time.monotonic() - began

    def feed(item: object) -> None:
        for target, channel in queues.items():
            while target not in failed and not done.is_set():
                try:
                    channel.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue

    with ThreadPoolExecutor(max_workers=len(plan.targets)) as pool:
        loads = {target: pool.submit(load, target) for target in plan.targets}
        try:
            for piece in source.save_image(plan.image_id):
                feed(piece)
                if len(failed) == len(queues):
                    break
            feed(end)
        except BaseException as error:
            feed(InfraError(f"the export from {plan.source} broke off: {error}"))
            done.set()
            raise
        errors = []
        for target, future in loads.items():
            try:
                timings[f"load on {target}"] = future.result()
            except InfraError as error:
                errors.append(f"engine {target}: {error.message}")
            except Exception as error:
                errors.append(f"engine {target}: {error}")
    if errors:
        raise InfraError(f"Streaming image {short_id(plan.image_id)} from {plan.source} failed on "
                         f"{'; '.join(errors)}.")


def _each(targets: Sequence[str], action: Callable[[str], float], timings: dict[str, float]) -> None:
    """Runs action on every target in parallel; all errors together in one sentence."""
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        futures = {target: pool.submit(action, target) for target in targets}
    errors = []
    for target, future in futures.items():
        try:
            timings[f"pull on {target}"] = future.result()
        except InfraError as error:
            errors.append(error.message)
    if errors:
        done = [target for target in targets if f"pull on {target}" in timings]
        raise InfraError(" ".join(errors) + (f" The image reached {', '.join(done)}." if done else ""))
