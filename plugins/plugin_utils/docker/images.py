# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images: inspect, list by label, tag, remove, pull and push."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import (
    APIError,
    DockerException,
    ImageNotFound,
    NotFound,
    SDKCalls,
)


class ImageCalls(SDKCalls):
    def inspect_image(self, reference: str) -> dict[str, Any]:
        with self.answering():
            return self._api.inspect_image(reference)

    def images(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.answering():
            return self._api.images(filters=filters)

    def tag(self, image: str, repository: str, tag: str | None = None, force: bool = False) -> bool:
        with self.answering():
            return self._api.tag(image, repository, tag, force=force)

    def remove_image(self, image: str, force: bool = False, noprune: bool = False) -> None:
        with self.answering():
            self._api.remove_image(image, force=force, noprune=noprune)

    def pull(self, repository: str, tag: str | None = None, auth_config: dict[str, str] | None = None) -> str:
        with self.answering():
            return self._api.pull(repository, tag=tag, auth_config=auth_config)

    def push(self, repository: str, tag: str | None = None,
             auth_config: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The registry's progress events, decoded, as they arrive."""
        with self.answering():
            return self._api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)


class Images:
    api: ImageCalls

    def image(self, reference: str) -> dict[str, Any] | None:
        """The inspect data of an image by ID or reference, or None when the engine lacks it."""
        if not reference:
            return None
        try:
            return self.api.inspect_image(reference)
        except (ImageNotFound, NotFound):
            return None
        except APIError as error:
            if error.status_code in (400, 404):
                return None
            raise InfraError(f"Docker could not inspect image {reference}: {error.explanation}") from None

    def images_with_label(self, label: str, value: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Inspect data of the images carrying the label (with that value), newest first; at most limit."""
        selector = label if value is None else f"{label}={value}"
        summaries = sorted(self.api.images(filters={"label": selector, "dangling": False}),
                           key=lambda summary: summary.get("Created", 0), reverse=True)
        images = (self.image(summary["Id"]) for summary in summaries[:limit])
        return [image for image in images if image]

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        try:
            self.api.tag(image_id, repository, tag, force=True)
        except APIError as error:
            raise InfraError(f"Docker could not tag {image_id} as {repository}:{tag}: {error.explanation}") from None

    def remove_image(self, reference: str) -> None:
        """Remove an image reference (untag; the last reference deletes the image). Never forced: an
        image that a container uses is refused, with conflict=True in the error's details."""
        try:
            self.api.remove_image(reference, force=False, noprune=False)
        except (ImageNotFound, NotFound):
            pass
        except APIError as error:
            if error.status_code != 404:
                raise InfraError(f"Docker could not remove image {reference}: {error.explanation}",
                                 conflict=error.status_code == 409) from None

    def pull(self, reference: str, auth_config: dict[str, str] | None = None) -> dict[str, Any]:
        if "@" in reference:  # repository@sha256:...: the engine takes a digest in place of the tag
            repository, tag = reference.split("@", 1)
        else:
            repository, tag = (reference.rsplit(":", 1) if ":" in reference.rsplit("/", maxsplit=1)[-1]
                               else (reference, "latest"))
        try:
            self.api.pull(repository, tag=tag, auth_config=auth_config)
        except DockerException as error:
            raise InfraError(f"Image {reference} is not in the local engine and pulling it failed: {error}.") from None
        image = self.image(reference)
        if image is None:
            raise InfraError(f"Image {reference} could not be found after pulling it.")
        return image

    def push(self, repository: str, tag: str, auth_config: dict[str, str] | None = None) -> str:
        """Push repository:tag to its registry; returns the manifest digest the registry gave it."""
        digest = None
        try:
            for event in self.api.push(repository, tag=tag, auth_config=auth_config):
                if event.get("error"):
                    raise InfraError(f"Pushing {repository}:{tag} failed: {event['error']}.")
                digest = ((event.get("aux") or {}).get("Digest")) or digest
        except DockerException as error:
            raise InfraError(f"Pushing {repository}:{tag} failed: {error}.") from None
        if not digest:
            raise InfraError(f"Pushing {repository}:{tag} gave no digest; the registry did not confirm the push.")
        return digest
