# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signatures and attestations in a registry, in cosign's layout, where skopeo and podman (a
sigstoreSigned policy), cosign and admission controllers look for them.

In the image's own repository, next to the image whose manifest digest is sha256:<hex>:
- tag sha256-<hex>.sig: an OCI image manifest with one layer per signature, of media type
  application/vnd.dev.cosign.simplesigning.v1+json; the layer is the "simple signing" payload naming
  the repository and the manifest digest, and its annotation dev.cosignproject.cosign/signature holds
  the base64 DER ECDSA-SHA256 signature of the layer's bytes.
- tag sha256-<hex>.att: one layer per attestation, of media type application/vnd.dsse.envelope.v1+json
  (the DSSE envelope itself), annotated with its predicateType.
A signature or attestation already there is kept; an identical one is not added twice.

The registry is spoken to over its HTTP API (distribution v2), with basic auth when credentials are
given; the manifest digest comes from the engine's push.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.dsse import envelope_statement, signers
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.keys import SigningKey, VerifyKey
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError

try:
    import requests
except ImportError:  # the Docker SDK needs it too; reported when a registry is spoken to
    requests = None  # type: ignore[assignment]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_LAYER = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "predicateType"
SIGNATURE_TYPE = "cosign container image signature"
TIMEOUT = 60


def signature_tag(manifest_digest: str, suffix: str) -> str:
    return manifest_digest.replace(":", "-", 1) + "." + suffix


def simple_signing_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The payload a cosign signature signs: which repository, which manifest."""
    return json.dumps({"critical": {"identity": {"docker-reference": docker_reference},
                                    "image": {"docker-manifest-digest": manifest_digest},
                                    "type": SIGNATURE_TYPE}, "optional": None},
                      separators=(",", ":")).encode("utf-8")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    data: bytes
    media_type: str
    annotations: dict[str, str]

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": len(self.data), "digest": digest_of(self.data),
                "annotations": dict(self.annotations)}


def manifest_for(layers: Sequence[Layer], existing: Sequence[dict[str, Any]] = ()) -> tuple[dict[str, Any], bytes]:
    """(the OCI manifest of existing layer descriptors plus layers, its config blob)."""
    descriptors = [*existing, *(layer.descriptor() for layer in layers)]
    config = json.dumps({"architecture": "", "os": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                         "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in descriptors]}},
                        separators=(",", ":")).encode("utf-8")
    return ({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
             "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": digest_of(config)},
             "layers": descriptors}, config)


def signature_layer(key: SigningKey, docker_reference: str, manifest_digest: str) -> Layer:
    payload = simple_signing_payload(docker_reference, manifest_digest)
    return Layer(payload, SIMPLE_SIGNING, {SIGNATURE_ANNOTATION: base64.b64encode(key.sign(payload)).decode("ascii")})


def attestation_layer(envelope: dict[str, Any]) -> Layer:
    predicate = (envelope_statement(envelope) or {}).get("predicateType") or ""
    return Layer(json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode("utf-8"), DSSE_LAYER,
                 {SIGNATURE_ANNOTATION: "", PREDICATE_ANNOTATION: predicate})


def signature_verifies(layer_bytes: bytes, annotations: dict[str, str], key: VerifyKey) -> bool:
    try:
        signature = base64.b64decode(annotations.get(SIGNATURE_ANNOTATION) or "", validate=True)
    except ValueError:
        return False
    return bool(signature) and key.verifies(signature, layer_bytes)


def envelope_signed_by(layer_bytes: bytes, key: VerifyKey) -> bool:
    try:
        envelope = json.loads(layer_bytes)
    except ValueError:
        return False
    return bool(signers(envelope, [key]))


class RegistryAPI:
    """A repository of a registry, over the distribution v2 HTTP API."""

    def __init__(self, url: str, repository: str, username: str | None = None, password: str | None = None,
                 ca_cert: str | None = None) -> None:
        if requests is None:
            raise InfraError("Pushing signatures needs the Python package requests on the controller; install the "
                             "collection's requirements (pip install -r requirements.txt).")
        self.base = url.rstrip("/") + "/"  # https://host:port/v2/
        self.repository = repository
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies are the controller's, not the registry's
        self.session.verify = ca_cert or True
        if username is not None and password is not None:
            self.session.auth = (username, password)
        self.address = urllib.parse.urlparse(url).netloc

    def _url(self, path: str) -> str:
        return urllib.parse.urljoin(self.base, f"{self.repository}/{path}")

    def _call(self, method: str, url: str, expected: tuple[int, ...], **options: Any) -> requests.Response:
        try:
            response = self.session.request(method, url, timeout=TIMEOUT, **options)
        except requests.RequestException as error:
            raise InfraError(f"The registry {self.address} does not answer ({error.__class__.__name__}); "
                             "signatures and attestations were not pushed.") from None
        if response.status_code in expected:
            return response
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate", "").split(" ", 1)[0]
            raise InfraError(f"The registry {self.address} refused to store signatures ({challenge or 'HTTP 401'} "
                             "authentication): give registry.username and registry.password of a user allowed "
                             "to push (token registries are not supported for signatures yet).")
        raise InfraError(f"The registry {self.address} answered HTTP {response.status_code} to {method} "
                         f"{urllib.parse.urlparse(url).path}: {response.text[:200]}")

    def manifest(self, reference: str) -> dict[str, Any] | None:
        response = self._call("GET", self._url(f"manifests/{reference}"), (200, 404),
                              headers={"Accept": OCI_MANIFEST})
        return response.json() if response.status_code == 200 else None

    def digest(self, reference: str) -> str | None:
        """The manifest digest a tag points to (None when it does not exist)."""
        response = self._call("HEAD", self._url(f"manifests/{reference}"), (200, 404),
                              headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 else None

    def blob(self, digest: str) -> bytes:
        return self._call("GET", self._url(f"blobs/{digest}"), (200,)).content

    def put_blob(self, data: bytes) -> None:
        digest = digest_of(data)
        if self._call("HEAD", self._url(f"blobs/{digest}"), (200, 404)).status_code == 200:
            return
        started = self._call("POST", self._url("blobs/uploads/"), (202,))
        location = urllib.parse.urljoin(self.base, started.headers["Location"])
        joiner = "&" if "?" in location else "?"
        self._call("PUT", f"{location}{joiner}digest={urllib.parse.quote(digest)}", (201, 204), data=data,
                   headers={"Content-Type": "application/octet-stream"})

    def put_manifest(self, tag: str, manifest: dict[str, Any], config: bytes, layers: Sequence[Layer]) -> str:
        for blob in (config, *(layer.data for layer in layers)):
            self.put_blob(blob)
        body = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
        self._call("PUT", self._url(f"manifests/{tag}"), (201, 200), data=body, headers={"Content-Type": OCI_MANIFEST})
        return digest_of(body)

    def layers(self, tag: str) -> list[tuple[dict[str, Any], bytes]]:
        """The (descriptor, bytes) of each layer under tag; none when the tag does not exist."""
        found = self.manifest(tag)
        return [(entry, self.blob(entry["digest"])) for entry in (found or {}).get("layers") or []]

    def attach(self, tag: str, layers: Sequence[Layer], key: VerifyKey | None = None) -> int:
        """Adds layers to the signature manifest under tag (made when missing); a layer whose payload is
        there already, signed by key, is not added again. Returns how many were added."""
        existing = (self.manifest(tag) or {}).get("layers") or []
        new = [layer for layer in layers if not any(_same(layer, entry, self, key) for entry in existing)]
        if not new:
            return 0
        manifest, config = manifest_for(new, existing)
        self.put_manifest(tag, manifest, config, new)
        return len(new)


def _payload(layer_bytes: bytes, media_type: str) -> bytes | None:
    if media_type != DSSE_LAYER:
        return layer_bytes
    try:
        return base64.b64decode(json.loads(layer_bytes).get("payload") or "")
    except (ValueError, AttributeError):
        return None


def _same(layer: Layer, entry: dict[str, Any], api: RegistryAPI, key: VerifyKey | None) -> bool:
    """Whether an existing layer carries layer's payload with a signature by key."""
    if entry.get("mediaType") != layer.media_type or key is None:
        return entry.get("digest") == digest_of(layer.data)
    if layer.media_type == SIMPLE_SIGNING:
        return entry.get("digest") == digest_of(layer.data) and \
            signature_verifies(layer.data, entry.get("annotations") or {}, key)
    stored = api.blob(entry["digest"])
    return _payload(stored, DSSE_LAYER) == _payload(layer.data, DSSE_LAYER) and envelope_signed_by(stored, key)
