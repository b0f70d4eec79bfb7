# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine as a whole: what it says about itself (info, its clock), its disk usage, its networks."""

from __future__ import annotations

from typing import Any

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError, parse_rfc3339
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.connection import APIError, NotFound, SDKCalls


class SystemCalls(SDKCalls):
    def info(self) -> dict[str, Any]:
        with self.answering():
            return self._api.info()

    def df(self) -> dict[str, Any]:
        with self.answering():
            return self._api.df()

    def inspect_network(self, name: str) -> dict[str, Any]:
        with self.answering():
            return self._api.inspect_network(name)


class System:
    api: SystemCalls

    def disk_usage(self) -> dict[str, Any]:
        """The engine's `docker system df` data: images, containers and volumes with their sizes."""
        try:
            return self.api.df()
        except APIError as error:
            raise InfraError(f"Docker could not report its disk usage: {error.explanation}") from None

    def engine_time(self) -> float:
        """The engine's clock, in epoch seconds: what lock leases are measured against."""
        try:
            return parse_rfc3339(self.api.info()["SystemTime"])
        except (APIError, KeyError, ValueError) as error:
            raise InfraError(f"Docker could not tell its time: {error}") from None

    def network_exists(self, name: str) -> bool:
        try:
            self.api.inspect_network(name)
            return True
        except NotFound:
            return False
        except APIError as error:
            if error.status_code in (400, 404):
                return False
            raise InfraError(f"Docker could not inspect network {name}: {error.explanation}") from None
