# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The engines of a fleet (plugin_utils/engines/declaration.py ENGINES_ARGUMENT_SPEC), taken by every
    # module that works over several Docker engines. docs/fleet.md describes each form.
    DOCUMENTATION = r"""
options:
  engines:
    description:
      - The Docker engines of the fleet, or its hypervisors (VM hosts, with O(engines[].libvirt_uri)), in
        declaration order (which breaks placement ties; the first is the coordinator, where a service's
        lock lives). A service runs on engines of one kind.
      - Not together with O(docker_host) (the one-engine form of this option) or O(engines_group).
      - A plain V(tcp://) engine on an address that is not loopback is refused unless it sets
        O(engines[].allow_insecure).
      - The task's own connection options (O(docker_host), O(validate_certs) and the rest) are the
        one-engine form of this option.
    type: list
    elements: dict
    suboptions:
      name:
        description: The engine's name, in labels, results and inventory groups (lower-case letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      docker_host:
        description:
          - How the controller reaches a Docker engine, V(unix:///var/run/docker.sock),
            V(tcp://10.0.0.5:2376) (with O(engines[].validate_certs)) or V(ssh://deploy@10.0.0.5) (the Docker
            CLI must be installed on the far side; one SSH connection serves the whole task).
          - Each engine has either this or O(engines[].libvirt_uri).
        type: str
      libvirt_uri:
        description:
          - How the controller reaches a hypervisor, whose hosts are VMs made from a disk (the C(disk) option of
            M(immutable.infra.rollout)), in libvirt's own URI forms, V(qemu:///system) on this machine or
            V(qemu+ssh://deploy@10.0.0.5/system) on another.
          - The controller needs the libvirt Python binding (C(libvirt-python)).
        type: str
      network:
        description:
          - A hypervisor's libvirt network for its VMs. Its VMs' addresses must be reachable from the
            controller and the balancer.
          - Without it, the collection's own network V(immutable-infra), made when missing, isolated (the
            hypervisor's machine and its VMs only), with a /24 of its own that no other network or route
            there uses.
        type: str
      accel:
        description:
          - How a hypervisor runs its VMs. V(auto) takes KVM on this machine only once a guest was seen to
            boot under it (the same probe as M(immutable.infra.verify)), and on another machine when its
            libvirt offers KVM; V(tcg) is plain emulation. V(auto) when not set.
        type: str
        choices: [auto, kvm, tcg]
      tls:
        description:
          - Talk to the V(tcp://) engine over TLS without checking its certificate;
            O(engines[].validate_certs=true) takes precedence.
          - The older form, a dictionary C({ca_cert, client_cert, client_key, verify}), is still read as
            O(engines[].ca_path), O(engines[].client_cert), O(engines[].client_key) and
            O(engines[].validate_certs).
          - Unlike the task's own O(tls), the options of an engine entry never fall back to environment variables.
        type: raw
      validate_certs:
        description: Talk to the V(tcp://) engine over TLS and check its certificate against O(engines[].ca_path).
        type: bool
      ca_path:
        description: The CA that signed the engine's certificate; the only CA trusted for it.
        type: path
      client_cert:
        description: The controller's client certificate (with O(engines[].client_key)).
        type: path
      client_key:
        description: The key of O(engines[].client_cert).
        type: path
      timeout:
        description: Seconds to wait for the engine to answer one call; V(120) when not set.
        type: int
      weight:
        description: The engine's share of a service's hosts, relative to the other engines (V(0) takes none).
        type: int
        default: 1
      max_hosts:
        description: At most this many hosts of a service on the engine.
        type: int
      allow_insecure:
        description: Allow plain V(tcp://) (no TLS) to an address that is not loopback.
        type: bool
        default: false
      advertise_address:
        description:
          - The IP address at which the balancer and the health check reach the published ports of this
            engine's hosts (with published addressing), when it is not the machine in O(engines[].docker_host)
            (a NAT, or a management network of its own). The ports are then bound to every address of the
            machine.
          - Without it, a host name in O(engines[].docker_host) is looked up when the task starts, and a
            name that does not resolve is an error naming the engine.
        type: str
  engines_group:
    description:
      - An inventory group of engine hosts, as the task's inventory holds it; each host is an engine named
        after it (lower-cased), described by its variables C(docker_host), C(docker_validate_certs),
        C(docker_tls), C(docker_ca_path), C(docker_client_cert), C(docker_client_key), C(docker_timeout),
        C(engine_weight), C(engine_max_hosts), C(engine_allow_insecure) and C(engine_advertise_address).
      - Not together with O(docker_host) or O(engines).
    type: str
"""
