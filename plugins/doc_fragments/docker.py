# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker engine to use, for example V(unix:///var/run/docker.sock) or V(tcp://10.0.0.5:2376).
      - When not set, the engine named by the E(DOCKER_HOST) environment variable of the controller is
        used, else the default local socket.
    type: str
requirements:
  - Docker SDK for Python (C(docker)) on the controller
  - a Docker engine reachable from the controller
notes:
  - This runs on the controller (an action plugin) and talks to the Docker engine directly, so it
    shows progress while it works. Target it at V(localhost); the hosts it manages are containers.
"""
