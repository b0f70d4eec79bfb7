# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # What every module of the collection shares: it runs on the controller as an action plugin, and
    # takes the shared options (plugin_utils/task/contract.py SHARED_OPTIONS, which the action base adds
    # to each module's own argument spec). Each module states its own check_mode and diff_mode support.
    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker engine to use, for example V(unix:///var/run/docker.sock) or V(tcp://10.0.0.5:2376).
      - When not set, the engine named by the E(DOCKER_HOST) environment variable of the controller is
        used, else the default local socket.
    type: str
  ledger:
    description:
      - Path of the ledger, the append-only JSON Lines record of bakes, verdicts and rollouts.
      - When not set, the E(IMMUTABLE_INFRA_LEDGER) environment variable of the controller names it,
        else C(~/.local/share/immutable-infra/ledger.jsonl).
      - Point every controller of a team at the same file on shared storage (NFS and other file
        systems with POSIX record locks) so the history is complete; appends are locked and atomic.
    type: path
attributes:
  platform:
    platforms: posix
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
requirements:
  - Docker SDK for Python (C(docker)) on the controller
  - a Docker engine reachable from the controller
notes:
  - This runs on the controller (an action plugin) and talks to the Docker engine directly, so it
    shows progress while it works. Target it at V(localhost); the hosts it manages are containers.
  - Every module of the collection is in the action group C(immutable.infra.infra), so
    C(module_defaults) with C(group/immutable.infra.infra) sets O(docker_host) and O(ledger) for all of them.
"""
