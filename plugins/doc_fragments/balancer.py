# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  balancer:
    description:
      - The load balancer in front of the service. Without it, running hosts are live and no
        membership changes are made.
      - See the collection's C(docs/haproxy.md) for the HAProxy configuration this needs.
    type: dict
    suboptions:
      type:
        description: Kind of balancer.
        type: str
        choices: [haproxy]
        default: haproxy
      runtime_api:
        description: Address of HAProxy's runtime API (a C(stats socket ... level admin)), a unix socket path or V(host:port).
        type: str
        required: true
      backend:
        description: The HAProxy backend that holds the service's servers.
        type: str
        required: true
      server_options:
        description: Options for servers added with HAProxy's C(add server), which does not apply C(default-server) lines.
        type: list
        elements: str
        default: [inter, 500ms, rise, "1", fall, "2"]
      up_timeout:
        description:
          - Seconds a new server has to come up in HAProxy after it was added (at most 3600).
        type: float
        default: 30
      trust_gate:
        description:
          - When the rollout's own health gate has passed at a new host's address, set its server up
            at once with the runtime API (C(set server ... health up)) instead of waiting for HAProxy's
            own checks to pass C(rise) times at their C(inter) pace (about 4 s with HAProxy's defaults,
            for every batch). HAProxy's checks keep running and take the server down after C(fall)
            failures.
          - Set V(false) when HAProxy reaches hosts by another path than the controller does, so that
            only HAProxy's own check lets traffic in.
        type: bool
        default: true
"""

    HEALTH = r"""
options:
  health:
    description:
      - The health gate each new host must pass before it joins the balancer. It is one kind of
        check, O(health.http_path), O(health.tcp) or O(health.command).
      - Checks reach the host at its container address, so the controller must reach the Docker
        network (true on the Docker host itself); use O(health.command) otherwise.
    type: dict
    suboptions:
      http_path:
        description:
          - Path of an HTTP GET on the service port; a 2xx or 3xx answer passes unless O(health.expected_status) says otherwise.
          - This is the check when none is given, with path V(/).
        type: str
      expected_status:
        description: HTTP status codes that pass.
        type: list
        elements: int
      tcp:
        description: Pass when a TCP connection to the service port succeeds.
        type: bool
        default: false
      command:
        description: A command run inside the host; exit code 0 passes.
        type: list
        elements: str
      timeout:
        description: Seconds a new host has to become healthy.
        type: float
        default: 60
      interval:
        description: Seconds between checks.
        type: float
        default: 0.5
      healthy_threshold:
        description: Passing checks in a row that make a host healthy.
        type: int
        default: 2
"""
