# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine-side contract: every label key and object name the collection writes or reads.

What the collection remembers lives on Docker objects, so these keys and names are a data format:
images baked months ago and hosts started by an older release are read with them. Change a key
or a prefix only together with a way to read what is already out there.

  image            provenance labels (OCI keys and ours), written once by the bake
  failed bake      an image kept from a failed bake (keep_failed), tagged failed-<hash>
  host             a container of a service, labelled with what it was made from
  verdict volume   immutable-infra-verdict-<image hex>, labelled with the latest verdict of that image
  attestations     immutable-infra-attestations-<image hex>, the image's signed statements (attest/store.py)
  lock container   immutable-infra-lock-<service>, a never-started container naming its owner
  journal volume   immutable-infra-rollout-<service>, what an unfinished rollout changed
  stopping volume  immutable-infra-stopping-<service>, hosts whose stop the engine is still finishing
  service record   immutable-infra-service-<service>, where the service runs: engines, balancer, addressing
  builder          immutable-infra-bake-<tag>-<random>, the container a bake runs in
  verify host      immutable-infra-verify-<image>-<random>, labelled as a throwaway host

Every value is a string; the dataclasses below read missing or malformed labels as "unknown" rather
than failing, because anything on the engine may have been made by another version or by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

LABEL_PREFIX = "immutable.infra."
OCI_PREFIX = "org.opencontainers.image."

# image provenance ---------------------------------------------------------------------------------
OCI_CREATED = OCI_PREFIX + "created"
OCI_TITLE = OCI_PREFIX + "title"
OCI_REVISION = OCI_PREFIX + "revision"
OCI_SOURCE = OCI_PREFIX + "source"
LABEL_INPUTS_HASH = LABEL_PREFIX + "inputs_hash"
LABEL_INPUTS = LABEL_PREFIX + "inputs"
LABEL_NAME = LABEL_PREFIX + "name"
LABEL_ROLES = LABEL_PREFIX + "roles"
LABEL_BASE = LABEL_PREFIX + "base"
LABEL_BASE_IMAGE_ID = LABEL_PREFIX + "base_image_id"
LABEL_ANSIBLE_CORE = LABEL_PREFIX + "ansible_core"
LABEL_COLLECTIONS = LABEL_PREFIX + "collections"
LABEL_BAKED_BY = LABEL_PREFIX + "baked_by"
LABEL_GIT_DIRTY = LABEL_PREFIX + "git_dirty"
LABEL_FAILED_BAKE = LABEL_PREFIX + "failed_bake"
# Image labels shown as a host's provenance, and those left out (the inputs summary is long and opaque).
PROVENANCE_PREFIXES = (OCI_PREFIX, LABEL_PREFIX)
HIDDEN_PROVENANCE_LABELS = (LABEL_INPUTS,)

# image tags with a meaning: failed-<hash> is a kept failed bake, pinned* keeps an image from prune
FAILED_TAG_PREFIX = "failed-"
PIN_TAG_PREFIX = "pinned"

# hosts --------------------------------------------------------------------------------------------
LABEL_SERVICE = LABEL_PREFIX + "service"
LABEL_GENERATION = LABEL_PREFIX + "generation"
LABEL_INDEX = LABEL_PREFIX + "index"
LABEL_IMAGE_ID = LABEL_PREFIX + "image_id"
LABEL_SPEC_HASH = LABEL_PREFIX + "spec_hash"
LABEL_SPEC = LABEL_PREFIX + "spec"
LABEL_ROLLOUT = LABEL_PREFIX + "rollout"
LABEL_PORT = LABEL_PREFIX + "port"
LABEL_ENGINE = LABEL_PREFIX + "engine"  # the engine (by its name in the fleet's engines) a host runs on
LABEL_BALANCER = LABEL_PREFIX + "balancer"  # the balancer a host was made to join, as it names itself

# verdict volumes (they also carry LABEL_IMAGE_ID and LABEL_INPUTS_HASH) ---------------------------
VERDICT_VOLUME_PREFIX = "immutable-infra-verdict-"
LABEL_VERDICT = LABEL_PREFIX + "verdict"
LABEL_TIME = LABEL_PREFIX + "time"
LABEL_REFERENCE = LABEL_PREFIX + "reference"
LABEL_LEDGER_ID = LABEL_PREFIX + "ledger_id"
LABEL_TESTS = LABEL_PREFIX + "tests"
LABEL_VERIFIED_BY = LABEL_PREFIX + "verified_by"
LABEL_REPORT = LABEL_PREFIX + "report"
LABEL_DURATION = LABEL_PREFIX + "duration"
LABEL_BROKEN = LABEL_PREFIX + "broken"

# attestation volumes: one label per kind (provenance, sbom, test_result) holding its DSSE envelope,
# gzip-compressed and base64-encoded, and one with the time it was stored (they also carry LABEL_IMAGE_ID)
ATTESTATION_VOLUME_PREFIX = "immutable-infra-attestations-"
LABEL_ATTESTATION_PREFIX = LABEL_PREFIX + "attestation."
LABEL_ATTESTED_AT_PREFIX = LABEL_PREFIX + "attested_at."

# the rollout lock and journal (both also carry LABEL_ROLLOUT; the journal LABEL_IMAGE_ID) ----------
LOCK_PREFIX = "immutable-infra-lock-"
JOURNAL_PREFIX = "immutable-infra-rollout-"
LABEL_LOCK = LABEL_PREFIX + "lock"
LABEL_OWNER = LABEL_PREFIX + "owner"
LABEL_CONTROLLER = LABEL_PREFIX + "controller"
LABEL_PID = LABEL_PREFIX + "pid"
LABEL_STARTED = LABEL_PREFIX + "started"
LABEL_PREVIOUS_LIVE = LABEL_PREFIX + "previous_live"
LABEL_NEW_HOSTS = LABEL_PREFIX + "new_hosts"
LABEL_PLACEMENT = LABEL_PREFIX + "placement"          # journal: the engine of each new host, host=engine,...
LABEL_RESTORED = LABEL_PREFIX + "restored"
LABEL_STOP_TIMEOUT = LABEL_PREFIX + "stop_timeout"
LABEL_REPLACED = LABEL_PREFIX + "replaced"            # a heal's journal: drifted=replacement,...
# The lock is a lease: each renewal is a volume immutable-infra-lease-<service>-<token>-<epoch>.
LEASE_PREFIX = "immutable-infra-lease-"
LABEL_LOCK_TOKEN = LABEL_PREFIX + "lock_token"        # which taking of a service's lock a lease belongs to
LABEL_LEASE = LABEL_PREFIX + "lease"                  # a renewal of a service's lock (value: the service)
LABEL_LEASE_SECONDS = LABEL_PREFIX + "lease_seconds"  # a lock lapses this long after its last renewal
LABEL_PID_START = LABEL_PREFIX + "pid_start"          # start time of the lock holder's process
LABEL_EPOCH = LABEL_PREFIX + "epoch"
# The journal and its stop notes (immutable-infra-stopnote-<service>-<n>) carry LABEL_JOURNAL.
STOP_NOTE_PREFIX = "immutable-infra-stopnote-"
LABEL_JOURNAL = LABEL_PREFIX + "journal"              # a rollout journal or one of its notes (value: the service)
LABEL_STOP_NOTE = LABEL_PREFIX + "stop_note"          # hosts a rollout was about to stop

# hosts out of the balancer whose stop the engine is still finishing: one label per host, its deadline
STOPPING_PREFIX = "immutable-infra-stopping-"
LABEL_STOPPING = LABEL_PREFIX + "stopping"
LABEL_STOPPING_HOST_PREFIX = LABEL_STOPPING + "."

# the service record: where a service runs, as its last rollout was told -------------------------
SERVICE_RECORD_PREFIX = "immutable-infra-service-"
LABEL_SERVICE_RECORD = LABEL_PREFIX + "service_record"  # value: the service
LABEL_RECORD_ENGINES = LABEL_PREFIX + "engines"          # the engines option, as JSON (no secrets)
LABEL_RECORD_DOCKER_HOST = LABEL_PREFIX + "docker_host"
LABEL_RECORD_BALANCER = LABEL_PREFIX + "balancer_options"  # the balancer option, as JSON
LABEL_RECORD_ADDRESSING = LABEL_PREFIX + "addressing"

# throwaway containers -----------------------------------------------------------------------------
BUILDER_NAME_PREFIX = "immutable-infra-bake-"
VERIFY_HOST_PREFIX = "immutable-infra-verify-"
DISK_BUILDER_PREFIX = "immutable-infra-disk-"
LABEL_VERIFYING = LABEL_PREFIX + "verifying"


# value helpers ------------------------------------------------------------------------------------
def _number(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isascii() and raw.isdigit() else None


def _names(raw: str | None) -> list[str]:
    return [name for name in (raw or "").split(",") if name]


def _flag(raw: str | None) -> bool | None:
    return None if raw is None else raw == "true"


def _text(flag: bool) -> str:
    return "true" if flag else "false"


def _json_object(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _without_none(labels: dict[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in labels.items() if value is not None}


def _suffix(name: str, prefix: str) -> str | None:
    return name[len(prefix):] if name.startswith(prefix) else None


def _image_hex(image_id: str) -> str:
    return image_id.split(":", 1)[-1]


# images -------------------------------------------------------------------------------------------
@dataclass
class ImageProvenance:
    """How a baked image came to be, as its labels say. A foreign image reads as all-None."""

    name: str | None = None
    inputs_hash: str | None = None
    inputs: dict[str, Any] | None = None  # the secret-free inputs summary
    roles: list[str] = field(default_factory=list)  # as baked: "name" or "namespace.collection.role@version"
    base: str | None = None
    base_image_id: str | None = None
    ansible_core: str | None = None
    collections: dict[str, str] = field(default_factory=dict)
    baked_by: str | None = None
    created: str | None = None
    git_commit: str | None = None
    git_source: str | None = None
    git_dirty: bool | None = None

    def to_labels(self) -> dict[str, str]:
        labels: dict[str, str | None] = {
            OCI_CREATED: self.created,
            OCI_TITLE: self.name,
            LABEL_INPUTS_HASH: self.inputs_hash,
            LABEL_INPUTS: None if self.inputs is None else json.dumps(self.inputs, sort_keys=True,
                                                                      separators=(",", ":")),
            LABEL_NAME: self.name,
            LABEL_ROLES: ",".join(self.roles),
            LABEL_BASE: self.base,
            LABEL_BASE_IMAGE_ID: self.base_image_id,
            LABEL_ANSIBLE_CORE: self.ansible_core,
            LABEL_COLLECTIONS: ",".join(f"{key}={value}" for key, value in self.collections.items()),
            LABEL_BAKED_BY: self.baked_by,
        }
        if self.git_commit:
            labels[OCI_REVISION] = self.git_commit
            labels[LABEL_GIT_DIRTY] = _text(bool(self.git_dirty))
        if self.git_source:
            labels[OCI_SOURCE] = self.git_source
        return _without_none(labels)

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> ImageProvenance:
        labels = labels or {}
        return cls(
            name=labels.get(LABEL_NAME), inputs_hash=labels.get(LABEL_INPUTS_HASH),
            inputs=_json_object(labels.get(LABEL_INPUTS)), roles=_names(labels.get(LABEL_ROLES)),
            base=labels.get(LABEL_BASE), base_image_id=labels.get(LABEL_BASE_IMAGE_ID),
            ansible_core=labels.get(LABEL_ANSIBLE_CORE),
            collections=dict(entry.partition("=")[::2] for entry in _names(labels.get(LABEL_COLLECTIONS))),
            baked_by=labels.get(LABEL_BAKED_BY), created=labels.get(OCI_CREATED),
            git_commit=labels.get(OCI_REVISION) or None, git_source=labels.get(OCI_SOURCE) or None,  # "": blanked
            git_dirty=_flag(labels.get(LABEL_GIT_DIRTY) or None))

    @property
    def role_names(self) -> list[str]:
        """The roles without their versions."""
        return [entry.split("@", 1)[0] for entry in self.roles if entry.strip()]


def image_labels(image: dict[str, Any] | None) -> dict[str, str]:
    """The labels of an image (or container) as the engine's inspect data gives them."""
    return ((image or {}).get("Config") or {}).get("Labels") or {}


def shown_provenance(labels: dict[str, str]) -> dict[str, str]:
    """The labels of an image that tell where it came from, as shown with the hosts it runs in."""
    return {key: value for key, value in labels.items()
            if key.startswith(PROVENANCE_PREFIXES) and key not in HIDDEN_PROVENANCE_LABELS}


def failed_bake_labels(inputs_hash: str) -> dict[str, str]:
    """Labels of an image kept from a failed bake. The empty name keeps it out of its repository's bakes."""
    return {LABEL_FAILED_BAKE: inputs_hash, LABEL_NAME: ""}


def failed_bake_tag(tag: str) -> str:
    return FAILED_TAG_PREFIX + tag


# Every label a bake may write about how its image was made.
PROVENANCE_LABELS = frozenset(ImageProvenance(
    name="-", inputs_hash="-", inputs={}, roles=["-"], base="-", base_image_id="-", ansible_core="-",
    collections={"-": "-"}, baked_by="-", created="-", git_commit="-", git_source="-", git_dirty=True).to_labels())


def marks_failed_bake(labels: dict[str, str], tags: list[str]) -> bool:
    """An image kept from a failed bake: by its label, or by a failed-<hash> tag."""
    return LABEL_FAILED_BAKE in labels or any(tag.rsplit(":", 1)[-1].startswith(FAILED_TAG_PREFIX) for tag in tags)


def pinning_tag(tags: list[str]) -> str | None:
    """The first tag that pins its image (one starting with 'pinned'), if any."""
    return next((tag for tag in tags if tag.rsplit(":", 1)[-1].startswith(PIN_TAG_PREFIX)), None)


# hosts --------------------------------------------------------------------------------------------
@dataclass
class HostLabels:
    """What a host of a service says about itself. A container that only carries the service label
    (made another way) reads with generation None."""

    service: str | None = None
    generation: int | None = None
    index: int | None = None
    image_id: str | None = None
    spec_hash: str | None = None
    rollout: str | None = None
    port: int | None = None
    inputs_hash: str | None = None
    spec: dict[str, Any] | None = None  # {"port", "container", "health"}, as given to the rollout
    engine: str | None = None  # the fleet engine it was started on (None: made before engines existed)
    balancer: str | None = None  # the balancer it joined (None: none, or made before this label existed)

    def to_labels(self) -> dict[str, str]:
        return _without_none({
            LABEL_SERVICE: self.service,
            LABEL_ENGINE: self.engine,
            LABEL_BALANCER: self.balancer,
            LABEL_GENERATION: None if self.generation is None else str(self.generation),
            LABEL_INDEX: None if self.index is None else str(self.index),
            LABEL_IMAGE_ID: self.image_id,
            LABEL_SPEC_HASH: self.spec_hash,
            LABEL_ROLLOUT: self.rollout,
            LABEL_PORT: None if self.port is None else str(self.port),
            LABEL_INPUTS_HASH: self.inputs_hash,
            LABEL_SPEC: None if self.spec is None else json.dumps(self.spec, sort_keys=True),
        })

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> HostLabels:
        labels = labels or {}
        return cls(service=labels.get(LABEL_SERVICE), generation=_number(labels.get(LABEL_GENERATION)),
                   index=_number(labels.get(LABEL_INDEX)), image_id=labels.get(LABEL_IMAGE_ID),
                   spec_hash=labels.get(LABEL_SPEC_HASH), rollout=labels.get(LABEL_ROLLOUT),
                   port=_number(labels.get(LABEL_PORT)), inputs_hash=labels.get(LABEL_INPUTS_HASH),
                   spec=_json_object(labels.get(LABEL_SPEC)), engine=labels.get(LABEL_ENGINE),
                   balancer=labels.get(LABEL_BALANCER))


# verdict volumes ----------------------------------------------------------------------------------
@dataclass
class VerdictLabels:
    """The latest verdict of an image, as its verdict volume holds it."""

    result: str | None = None  # "passed" or "failed"
    image_id: str | None = None
    time: str | None = None
    reference: str | None = None  # the image as the user named it when verifying (a tag or the ID)
    ledger_id: str | None = None
    tests: str | None = None  # the test counts, as JSON
    inputs_hash: str | None = None
    verified_by: str | None = None
    report: str | None = None
    duration: str | None = None
    broken: str | None = None

    @property
    def passed(self) -> bool:
        return self.result == "passed"

    def to_labels(self) -> dict[str, str]:
        return _without_none({
            LABEL_VERDICT: self.result, LABEL_IMAGE_ID: self.image_id, LABEL_TIME: self.time,
            LABEL_REFERENCE: self.reference, LABEL_LEDGER_ID: self.ledger_id, LABEL_TESTS: self.tests,
            LABEL_INPUTS_HASH: self.inputs_hash, LABEL_VERIFIED_BY: self.verified_by, LABEL_REPORT: self.report,
            LABEL_DURATION: self.duration, LABEL_BROKEN: self.broken})

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> VerdictLabels:
        labels = labels or {}
        return cls(result=labels.get(LABEL_VERDICT), image_id=labels.get(LABEL_IMAGE_ID),
                   time=labels.get(LABEL_TIME), reference=labels.get(LABEL_REFERENCE),
                   ledger_id=labels.get(LABEL_LEDGER_ID), tests=labels.get(LABEL_TESTS),
                   inputs_hash=labels.get(LABEL_INPUTS_HASH), verified_by=labels.get(LABEL_VERIFIED_BY),
                   report=labels.get(LABEL_REPORT), duration=labels.get(LABEL_DURATION),
                   broken=labels.get(LABEL_BROKEN))


def verdict_volume_name(image_id: str) -> str:
    return VERDICT_VOLUME_PREFIX + _image_hex(image_id)


def _volume_image(name: str, prefix: str, labels: dict[str, str] | None) -> str | None:
    hex_id = _suffix(name, prefix)
    if hex_id is None:
        return None
    return (labels or {}).get(LABEL_IMAGE_ID) or "sha256:" + hex_id


def verdict_volume_image(name: str, labels: dict[str, str] | None) -> str | None:
    """The image a verdict volume speaks of (None for other volumes): its label, else its name."""
    return _volume_image(name, VERDICT_VOLUME_PREFIX, labels)


def attestation_volume_name(image_id: str) -> str:
    return ATTESTATION_VOLUME_PREFIX + _image_hex(image_id)


def attestation_volume_image(name: str, labels: dict[str, str] | None) -> str | None:
    """The image an attestation volume speaks of (None for other volumes): its label, else its name."""
    return _volume_image(name, ATTESTATION_VOLUME_PREFIX, labels)


# the rollout lock and journal ---------------------------------------------------------------------
@dataclass
class JournalLabels:
    """What an unfinished rollout changed, as its journal volume's labels say.

    restored: the new hosts belong to a kept generation, so undoing it stops them instead of removing them.
    placement: the engine of each new host, over several engines (the journal is on the coordinator).
    replaced (a heal): drifted host -> its replacement; once the drifted host is gone, undoing keeps the
    replacement instead. stop_timeout: the seconds a stop of the rollout's hosts was given.
    """

    rollout: str = ""
    previous_live: list[str] = field(default_factory=list)
    new_hosts: list[str] = field(default_factory=list)
    image_id: str = ""
    restored: bool = False
    started: str = ""
    placement: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)
    stop_timeout: int = 10

    def to_labels(self) -> dict[str, str]:
        labels = {LABEL_ROLLOUT: self.rollout, LABEL_PREVIOUS_LIVE: ",".join(self.previous_live),
                  LABEL_NEW_HOSTS: ",".join(self.new_hosts), LABEL_IMAGE_ID: self.image_id,
                  LABEL_RESTORED: _text(self.restored), LABEL_STARTED: self.started,
                  LABEL_REPLACED: _pairs_text(self.replaced), LABEL_STOP_TIMEOUT: str(self.stop_timeout)}
        if self.placement:
            labels[LABEL_PLACEMENT] = _pairs_text(self.placement)
        return labels

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> JournalLabels:
        labels = labels or {}
        stop_timeout = _number(labels.get(LABEL_STOP_TIMEOUT))
        return cls(rollout=labels.get(LABEL_ROLLOUT, ""), previous_live=_names(labels.get(LABEL_PREVIOUS_LIVE)),
                   new_hosts=_names(labels.get(LABEL_NEW_HOSTS)), image_id=labels.get(LABEL_IMAGE_ID, ""),
                   restored=labels.get(LABEL_RESTORED) == "true", started=labels.get(LABEL_STARTED, ""),
                   placement=_parse_pairs(labels.get(LABEL_PLACEMENT)),
                   replaced=_parse_pairs(labels.get(LABEL_REPLACED)),
                   stop_timeout=10 if stop_timeout is None else stop_timeout)


def _pairs_text(pairs: dict[str, str]) -> str:
    """{host: engine} or {host: host} as a label value: key=value,key=value (sorted)."""
    return ",".join(f"{key}={value}" for key, value in sorted(pairs.items()))


def _parse_pairs(raw: str | None) -> dict[str, str]:
    pairs = (entry.partition("=") for entry in _names(raw))
    return {key: value for key, _sep, value in pairs if key and value}


def stopping_name(service: str) -> str:
    return STOPPING_PREFIX + service


def stopping_labels(service: str, pending: dict[str, float]) -> dict[str, str]:
    """The stopping volume's labels: host name -> epoch by which the engine will have killed it."""
    labels = {LABEL_STOPPING: service}
    labels.update({LABEL_STOPPING_HOST_PREFIX + name: f"{deadline:.0f}" for name, deadline in sorted(pending.items())})
    return labels


def stopping_hosts(labels: dict[str, str] | None) -> dict[str, float]:
    pending = {}
    for key, value in (labels or {}).items():
        name = _suffix(key, LABEL_STOPPING_HOST_PREFIX)
        if name:
            try:
                pending[name] = float(value)
            except ValueError:
                continue
    return pending


@dataclass
class ServiceRecordLabels:
    """Where a service runs, as the record its rollouts keep says: the options that reach its hosts and
    its balancer again (never a password or a key)."""

    service: str | None = None
    engines: list[dict[str, Any]] | None = None
    docker_host: str | None = None
    balancer: dict[str, Any] | None = None
    addressing: str | None = None

    def to_labels(self) -> dict[str, str]:
        return _without_none({
            LABEL_SERVICE_RECORD: self.service,
            LABEL_RECORD_ENGINES: None if self.engines is None else json.dumps(self.engines, sort_keys=True),
            LABEL_RECORD_DOCKER_HOST: self.docker_host,
            LABEL_RECORD_BALANCER: None if self.balancer is None else json.dumps(self.balancer, sort_keys=True),
            LABEL_RECORD_ADDRESSING: self.addressing})

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> ServiceRecordLabels:
        labels = labels or {}
        try:
            engines = json.loads(labels[LABEL_RECORD_ENGINES]) if labels.get(LABEL_RECORD_ENGINES) else None
        except ValueError:
            engines = None
        return cls(service=labels.get(LABEL_SERVICE_RECORD),
                   engines=engines if isinstance(engines, list) else None,
                   docker_host=labels.get(LABEL_RECORD_DOCKER_HOST),
                   balancer=_json_object(labels.get(LABEL_RECORD_BALANCER)),
                   addressing=labels.get(LABEL_RECORD_ADDRESSING))


def service_record_name(service: str) -> str:
    return SERVICE_RECORD_PREFIX + service


def lock_name(service: str) -> str:
    return LOCK_PREFIX + service


def journal_name(service: str) -> str:
    return JOURNAL_PREFIX + service


def locked_service(container_name: str) -> str | None:
    """The service whose lock a container is, or None."""
    return _suffix(container_name, LOCK_PREFIX)


def journaled_service(volume_name: str) -> str | None:
    """The service whose rollout journal a volume is, or None."""
    return _suffix(volume_name, JOURNAL_PREFIX)


# throwaway containers -----------------------------------------------------------------------------
def builder_name(tag: str, suffix: str, until: float | None = None) -> str:
    """A bake builder's name; until: the end of its bake_timeout (epoch), which prune waits for. In the name, not
    a label: Docker copies a container's labels into the image committed from it."""
    return f"{BUILDER_NAME_PREFIX}{tag}-{suffix}" + (f"-until{int(until)}" if until else "")


def builder_runs_until(container_name: str) -> float | None:
    """The end of a builder's bake_timeout, from its name (builder_name); None for builders named without it."""
    found = re.search(r"-until([0-9]+)$", container_name)
    return float(found.group(1)) if found else None


def is_builder(container_name: str) -> bool:
    return container_name.startswith(BUILDER_NAME_PREFIX)


def verify_host_name(short_image_id: str, suffix: str) -> str:
    return f"{VERIFY_HOST_PREFIX}{short_image_id}-{suffix}"


def verify_host_labels(image_id: str) -> dict[str, str]:
    return {LABEL_VERIFYING: image_id}


def is_verify_host(labels: dict[str, str] | None) -> bool:
    return LABEL_VERIFYING in (labels or {})
