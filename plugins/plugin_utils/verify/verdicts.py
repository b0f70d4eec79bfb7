# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verdicts bound to image IDs, and the gate that keeps unverified images from replacing anything.

Image labels cannot change after a bake, so the engine-side record of a verdict is a small Docker
volume named after the image ID and labelled with the result. Every controller using the engine
sees it, the check is one API call, and the ledger keeps the full history.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import LABEL_PREFIX, InfraError, short_id
from ansible_collections.immutable.infra.plugins.plugin_utils.core.docker_client import DockerClient

VERDICT_LABEL = LABEL_PREFIX + "verdict"
VERDICT_VOLUME_PREFIX = "immutable-infra-verdict-"


def verdict_volume_name(image_id: str) -> str:
    return VERDICT_VOLUME_PREFIX + image_id.split(":", 1)[-1]


def record_verdict(client: DockerClient, image_id: str, passed: bool, details: dict[str, object]) -> None:
    """Stores the latest verdict for image_id on the engine, replacing an earlier one."""
    labels = {VERDICT_LABEL: "passed" if passed else "failed", LABEL_PREFIX + "image_id": image_id}
    labels.update({LABEL_PREFIX + key: str(value) for key, value in details.items()})
    client.replace_volume(verdict_volume_name(image_id), labels)


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
    verdict = verdict_for(client, image_id)
    if verdict and verdict.get(VERDICT_LABEL) == "passed":
        return inspected
    described = image if image == image_id else f"'{image}' (now {short_id(image_id)})"
    if verdict:
        raise InfraError(f"Image {described} failed verification at {verdict.get(LABEL_PREFIX + 'time', '?')}; "
                         "fix it, bake again and verify the new image.")
    moved = ""
    if image != image_id:
        verified = [labels for labels in client.volumes_with_label(VERDICT_LABEL, "passed")
                    if labels.get(LABEL_PREFIX + "reference") == image]
        if verified:
            moved = (f" The tag was verified when it pointed to {short_id(verified[0][LABEL_PREFIX + 'image_id'])}, "
                     "but it has moved since.")
    raise InfraError(f"Image {described} has no passing verdict.{moved} Run immutable.infra.verify on it first, "
                     "or set require_verified: false to roll out an unverified image deliberately.")
