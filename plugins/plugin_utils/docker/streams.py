# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What moves in tar streams: an image saved and loaded (docker save / load), a container's filesystem
exported, files copied into a container."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import APIError, DockerException, SDKCalls

STREAM_CHUNK = 1024 * 1024  # image streams move in pieces of this size, never whole in memory


class StreamCalls(SDKCalls):
    def get_image(self, image: str, chunk_size: int) -> Iterator[bytes]:
        with self.answering():
            return self._api.get_image(image, chunk_size=chunk_size)

    def load_image(self, data: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """The engine's events about the load, decoded, as they arrive."""
        with self.answering():
            return self._api.load_image(data, quiet=True)

    def export(self, container: str, chunk_size: int) -> Iterator[bytes]:
        with self.answering():
            return self._api.export(container, chunk_size=chunk_size)

    def put_archive(self, container: str, path: str, data: bytes) -> bool:
        with self.answering():
            return self._api.put_archive(container, path, data)


class Streams:
    api: StreamCalls

    def save_image(self, image_id: str) -> Iterator[bytes]:
        """The image as the tar stream of `docker save`, in pieces (nothing is held whole in memory)."""
        try:
            with self.api.answering():  # an engine lost mid-stream breaks the reading, not the call
                yield from self.api.get_image(image_id, chunk_size=STREAM_CHUNK)
        except DockerException as error:
            raise InfraError(f"Docker could not export image {image_id}: {error}.") from None

    def load_image(self, stream: Iterable[bytes]) -> None:
        """Load a `docker save` tar stream; the engine reads it as it arrives (chunked upload)."""
        try:
            with self.api.answering():
                for event in self.api.load_image(stream):
                    if isinstance(event, dict) and event.get("error"):
                        raise InfraError(f"Docker could not load the image stream: {event['error']}.")
        except DockerException as error:
            raise InfraError(f"Docker could not load the image stream: {error}.") from None

    def export(self, container_id: str, chunk_size: int = 4 * 1024 * 1024) -> Iterable[bytes]:
        """The container's filesystem as a tar stream (docker export), in chunks."""
        try:
            return self.api.export(container_id, chunk_size=chunk_size)
        except APIError as error:
            raise InfraError(f"Docker could not export container {container_id[:12]}: {error.explanation}") from None

    def put_files(self, container_id: str, files: Iterable[tuple[str, bytes, int]]) -> None:
        """Copy (absolute path, content, mode) triples into the container's filesystem."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path, content, mode in files:
                info = tarfile.TarInfo(path.lstrip("/"))
                info.size, info.mode, info.mtime = len(content), mode, int(time.time())
                archive.addfile(info, io.BytesIO(content))
        try:
            self.api.put_archive(container_id, "/", buffer.getvalue())
        except APIError as error:
            raise InfraError(f"Docker could not copy files into container {container_id[:12]}: "
                             f"{error.explanation}") from None
