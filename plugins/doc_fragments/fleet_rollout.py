# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # How a rollout (or rollback) over several engines gets its image to them and reaches its hosts
    # (plugin_utils/rollout/fleet_engines.py FLEET_ARGUMENT_SPEC, beside ENGINES_ARGUMENT_SPEC).
    DOCUMENTATION = r"""
options:
  registry:
    description:
      - A registry the engines pull from. The image is pushed once from an engine that has it (the
        controller's own engine first, where it was baked), pulled by digest on every engine that needs
        it and lacks it, and its ID checked on each; the image ID stays its identity everywhere.
      - A registry on V(127.0.0.0/8) is reached over plain HTTP (engines allow loopback registries
        without TLS); any other address over HTTPS.
      - Without it, images are streamed from an engine that has them (C(docker save) into C(docker load)).
      - Only used over several engines; the registry's answer is checked before anything is tagged,
        pushed or pulled, so a registry that is down stops the task with nothing changed.
    type: dict
    suboptions:
      address:
        description: V(host:port), as the engines pull from it (no scheme, no path).
        type: str
        required: true
      repository:
        description: The repository images are pushed to (the tag is the image ID).
        type: str
        default: immutable-infra/images
      ca_cert:
        description: The CA of a registry on another machine, when it is not in the system's trust store.
        type: path
      username:
        description:
          - The user to push and pull as, for a registry with authentication (htpasswd basic auth, or a
            token service). Give it with O(registry.password), or neither.
          - The credentials go to each engine with its push and pull; no engine needs a C(docker login).
            A basic-auth registry that refuses them, or one that asks for credentials when none are
            given, stops the task before anything is tagged, pushed or pulled.
        type: str
      password:
        description:
          - The password or access token of O(registry.username). Kept out of logs and results; keep it in
            Ansible Vault or an environment lookup rather than in the playbook.
        type: str
      signing_key:
        description:
          - A private key (as O(immutable.infra.bake#module:signing_key), a PEM file relative to the directory
            C(ansible-playbook) runs in like O(registry.ca_cert), or the PEM text) that signs what is pushed, in
            cosign's layout beside the image (C(sha256-<manifest digest>.sig)), so that skopeo and podman with a
            C(sigstoreSigned) policy, cosign and admission controllers accept the image.
          - The image's attestations go to C(sha256-<manifest digest>.att); those this key signed are signed again
            naming the manifest digest too, which is what C(cosign verify-attestation) matches. Without this key
            the attestations are pushed as they are and no signature is made.
        type: str
      signing_key_password:
        description: The password of an encrypted O(registry.signing_key). Kept out of logs and results.
        type: str
  image_transfer:
    description:
      - How the image reaches engines that lack it, before any host starts. V(auto) uses O(registry) when
        it is set and streams otherwise; V(registry) needs O(registry); V(stream) streams even with one.
    type: str
    choices: [auto, registry, stream]
    default: auto
  place_down_share:
    description:
      - An engine that does not answer when the task starts fails it, naming the engine, and nothing is
        changed. With V(true), its hosts' share is placed on the other engines instead (the first
        declared engine, the coordinator that holds the lock and journal, must always answer).
    type: bool
    default: false
  addressing:
    description:
      - Where the balancer and the health check reach each host. V(container) is the container's address
        on its network (the controller and the balancer run on the engines' machine, or route to their
        container networks). V(published) publishes the service port on a free port of the engine's
        machine, bound to the address in the engine's O(engines[].docker_host) (V(127.0.0.1) for a
        V(unix://) engine), and uses that address and port.
      - The default is V(container) when every engine is on this machine (V(unix://) or loopback) and
        V(published) otherwise. A O(health.command) check runs inside the host through its engine either way.
    type: str
    choices: [container, published]
"""
