# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verdicts bound to image IDs, and the gate that keeps unverified images from replacing anything.

Image labels cannot change after a bake, so the engine-side record of a verdict is a small Docker
volume named after the image ID and labelled with the result. Every controller using the engine
sees it, the check is one API call, and the ledger keeps the full history.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import (
    LABEL_VERDICT,
    VerdictLabels,
    verdict_volume_name,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient


def record_verdict(client: DockerClient, image_id: str, passed: bool, details: dict[str, object]) -> None:
    """Stores the latest verdict for image_id on the engine, replacing an earlier one.

    details: the other fields of VerdictLabels (time, reference, ledger_id, tests, ...), any value.
    """
    verdict = VerdictLabels(result="passed" if passed else "failed", image_id=image_id,
                            **{key: str(value) for key, value in details.items()})
    client.replace_volume(verdict_volume_name(image_id), verdict.to_labels())


def verdict_for(client: DockerClient, image_id: str) -> dict[str, str] | None:
    """The labels of the latest verdict recorded for image_id, or None when it was never verified."""
    return client.volume_labels(verdict_volume_name(image_id))


def require_verified(client: DockerClient, image: str, require: bool = True) -> dict[str, Any]:
    """The gate: resolves image to an ID and refuses it unless that exact ID has a passing verdict.

    Returns the image's inspect data. A tag that has moved to another image since it was verified
    resolves to the new, unverified ID and is refused.
    """
    inspected = client.image(image)
    if inspected is None:
        raise InfraError(f"Image '{image}' is not in the Docker engine; bake it (immutable.infra.bake) "
                         "or give an image ID that exists.")
    image_id = inspected["Id"]
    if not require:
        return inspected
    volume = verdict_for(client, image_id)
    verdict = VerdictLabels.from_labels(volume)
    if volume and verdict.passed:
        return inspected
    described = image if image == image_id else f"'{image}' (now {short_id(image_id)})"
    if volume:
        raise InfraError(f"Image {described} failed verification at {'?' if verdict.time is None else verdict.time}; "
                         "fix it, bake again and verify the new image.")
    moved = ""
    if image != image_id:
        verified = [found for found in map(VerdictLabels.from_labels, client.volumes_with_label(LABEL_VERDICT, "passed"))
                    if found.reference == image]
        if verified:
            moved = (f" The tag was verified when it pointed to {short_id(verified[0].image_id or '')}, "
                     "but it has moved since.")
    raise InfraError(f"Image {described} has no passing verdict.{moved} Run immutable.infra.verify on it first, "
                     "or set require_verified: false to roll out an unverified image deliberately.")
