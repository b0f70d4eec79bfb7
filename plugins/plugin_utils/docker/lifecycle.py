# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container's life: start it, stop it (waiting for the answer or not), kill it, wait until it exited."""

from __future__ import annotations

import time
from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import (
    APIError,
    NotFound,
    ReadTimeout,
    RequestsConnectionError,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.containers import Containers


class Lifecycle(Containers):
    def run_detached(self, image: str, name: str, labels: dict[str, str], **options: Any) -> str:
        """Create (see create_container) and start a container; returns its ID. Nothing is left behind
        when start fails."""
        container_id = self.create_container(image, name, labels, **options)
        try:
            self.start(container_id)
        except InfraError:
            self.remove_container(container_id)
            raise
        return container_id

    def start(self, container_id: str) -> None:
        try:
            self.api.start(container_id)
        except APIError as error:
            raise InfraError(f"Docker could not start container {container_id[:12]}: {error.explanation}") from None

    def stop(self, container_id: str, timeout: int) -> None:
        try:
            self.api.stop(container_id, timeout=timeout)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code not in (304, 404):
                raise InfraError(f"Docker could not stop container {container_id[:12]}: {error.explanation}") from None

    def request_stop(self, container_id: str, timeout: int, wait: float) -> bool:
        """Asks the engine to stop the container (SIGTERM, then SIGKILL after `timeout` seconds) and waits
        at most `wait` seconds for it; True when it stopped within that. Otherwise the engine goes on
        with the stop by itself: it does not depend on the caller waiting for the answer."""
        try:
            self.api.post_stop(container_id, timeout, wait=max(wait, 0.05))
            return True
        except (ReadTimeout, RequestsConnectionError) as error:
            if isinstance(error, RequestsConnectionError) and "timed out" not in str(error).lower():
                raise InfraError(f"Docker could not stop container {container_id[:12]}: {error}") from None
            return False
        except APIError as error:
            raise InfraError(f"Docker could not stop container {container_id[:12]}: {error.explanation}") from None

    def kill(self, container_id: str) -> None:
        """SIGKILL; a container that is not running (any more) is not an error."""
        try:
            self.api.kill(container_id)
        except NotFound:
            pass
        except APIError as error:
            if error.status_code not in (404, 409) and "is not running" not in str(error.explanation):
                raise InfraError(f"Docker could not kill container {container_id[:12]}: {error.explanation}") from None

    def wait_exited(self, container_id: str, timeout: float) -> bool:
        """Waits until the container is not running; False when it still runs after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            inspected = self.container(container_id)
            if inspected is None or not (inspected.get("State") or {}).get("Running"):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
