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
      - The Docker engine to use, V(unix:///var/run/docker.sock) (the default), V(tcp://10.0.0.5:2376) (with
        O(validate_certs)) or V(ssh://deploy@10.0.0.5) (the Docker CLI must be installed on that machine).
      - If not set, the E(DOCKER_HOST) environment variable of the controller is used, else the default.
      - An V(ssh://) engine is reached over one SSH connection for the whole task, which reads
        C(~/.ssh/config), C(~/.ssh/known_hosts), the ssh-agent and the default keys; the machine's host key
        must already be known.
    type: str
  tls:
    description:
      - Talk to a V(tcp://) engine over TLS without checking the engine's certificate.
        O(validate_certs=true) takes precedence.
      - If not set, the E(DOCKER_TLS) environment variable is used, else V(false).
    type: bool
  validate_certs:
    description:
      - Talk to a V(tcp://) engine over TLS and check its certificate against O(ca_path).
      - If not set, the E(DOCKER_TLS_VERIFY) environment variable is used (any value but V(0), V(false),
        V(no) or V(off) turns it on, as for the Docker CLI), else V(false).
    type: bool
  ca_path:
    description:
      - The CA certificate that signed the engine's certificate (PEM).
      - It is the only CA trusted for the engine; E(REQUESTS_CA_BUNDLE) and the system CAs are not used.
      - If not set, C(ca.pem) in the directory of the E(DOCKER_CERT_PATH) environment variable is used
        (C(~/.docker) when TLS is asked for by the environment and E(DOCKER_CERT_PATH) is not set).
    type: path
  client_cert:
    description:
      - The controller's client certificate (PEM), for an engine that checks its clients (C(--tlsverify)).
        Given with O(client_key).
      - If not set, C(cert.pem) in the directory of E(DOCKER_CERT_PATH) is used.
    type: path
  client_key:
    description:
      - The key of O(client_cert) (PEM).
      - If not set, C(key.pem) in the directory of E(DOCKER_CERT_PATH) is used.
    type: path
  timeout:
    description:
      - Seconds to wait for the Docker engine to answer one call.
      - If not set, the E(DOCKER_TIMEOUT) environment variable is used, else V(120).
    type: int
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
  - paramiko on the controller, for an V(ssh://) engine
  - a Docker engine reachable from the controller
notes:
  - This runs on the controller (an action plugin) and talks to the Docker engine directly, so it
    shows progress while it works. Target it at V(localhost); the hosts it manages are containers.
  - Every module of the collection is in the action group C(immutable.infra.infra), so
    C(module_defaults) with C(group/immutable.infra.infra) sets O(docker_host), its TLS options and O(ledger)
    for all of them.
  - The options that reach the engine have the names and environment variables of the community.docker
    modules and of the Docker CLI, so an engine configured for C(docker) is reached without options.
  - The collection's Python requirements for the controller are in its C(meta/ee-requirements.txt)
    (C(meta/execution-environment.yml) names it for ansible-builder).
"""
