# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A disk's signed statements (attest/), for the trust gate of a rollout of VM hosts.

immutable.infra.disk and verify write them beside the disk file (the sidecars). When the disk is
copied into a hypervisor's pool they are copied into its store too, as a record named like an image's
attestation volume (labels as attest/store.py writes them), so that a disk named by its digest alone
(a rollback whose file is gone) is still judged by the same statements, and prune removes them with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.attest.store import (
    Attestations,
    from_labels,
    newest,
    read_sidecars,
    to_labels,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.attest.trust import check_attestations, parse_trust
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import attestation_volume_name
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.disk import DiskArtifact
from ansible_collections.immutable.infra.plugins.plugin_utils.hypervisors.store import LibvirtStore


def store_disk_attestations(store: LibvirtStore, artifact: DiskArtifact) -> bool:
    """Copies the sidecars of the disk file into the hypervisor's store; False when it has none."""
    found = read_sidecars(artifact.path) if artifact.path else Attestations()
    if not found.envelopes:
        return False
    store.replace(attestation_volume_name(artifact.digest), to_labels(artifact.digest, found))
    return True


def disk_attestations(stores: Mapping[str, LibvirtStore], artifact: DiskArtifact) -> Attestations:
    """The sidecars beside the disk file when it has a file; else the newest copy a hypervisor keeps."""
    if artifact.path:
        return read_sidecars(artifact.path)
    return newest({name: from_labels(store.get(attestation_volume_name(artifact.digest)), f"hypervisor {name}")
                   for name, store in stores.items()})


def require_trusted_disk(stores: Mapping[str, LibvirtStore], artifact: DiskArtifact | None,
                         raw: Mapping[str, Any] | None, basedir: str) -> dict[str, Any]:
    """The trust gate for a disk: {} without trust:; else the signers (for the rollout's ledger record),
    or one sentence when the disk's statements do not pass."""
    trust = parse_trust(raw, basedir)
    if trust is None or artifact is None:
        return {}
    signed = check_attestations(artifact.digest, f"Disk {artifact.describe()}", disk_attestations(stores, artifact),
                                trust)
    return {"trusted": signed}
