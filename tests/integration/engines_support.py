"""The multi-engine rig (make engines) as the tests see it: its description, clients, and images made
for one test and removed from every engine afterwards."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid

from support import skip_unless_required

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import connect_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import Engine, parse_engines

RIG_DIR = os.environ.get("IMMUTABLE_INFRA_RIG_DIR", "/var/lib/immutable-infra/rig")


def rig_description(engines: int | None = 3) -> dict | None:
    """The rig as scripts/engines.py wrote it, with its first `engines` engines (None: all)."""
    path = os.path.join(RIG_DIR, "rig.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        description = json.load(handle)
    # The tests are written for rig1-rig3; a fourth engine (the fleet benchmark's) is not theirs.
    description["engines"] = description["engines"][:engines]
    return description


def rig_engines(description: dict) -> list[Engine]:
    return parse_engines([{"name": engine["name"], "docker_host": engine["docker_host"], "tls": engine["tls"]}
                          for engine in description["engines"]])


def rig_or_skip() -> tuple[dict, list[Engine], dict[str, DockerClient]]:
    description = rig_description()
    if description is None:
        skip_unless_required(f"the engine rig is not up (no {RIG_DIR}/rig.json); run 'make engines'")
    engines = rig_engines(description)
    reached = connect_engines(engines)
    if reached.down:
        reasons = "; ".join(f"{name}: {reason[:200]}" for name, reason in reached.down.items())
        skip_unless_required(f"the engine rig is not up ({reasons}); run 'make engines'")
    return description, engines, reached.clients


def unique_image(local: DockerClient, base_image: str, repository: str) -> str:
    """A new image (the base plus one file of random content) on the local engine; returns its ID."""
    container = local.create_container(base_image, f"itest-ship-{uuid.uuid4().hex[:8]}", {}, command=["true"])
    try:
        content = uuid.uuid4().hex.encode()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo("etc/immutable-infra-ship-test")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        local.api.put_archive(container, "/", buffer.getvalue())
        return local.commit(container, repository, "ship", {"Labels": {"immutable.infra.test": "ship"}})
    finally:
        local.remove_container(container)


def remove_everywhere(clients: dict[str, DockerClient], image_id: str) -> None:
    for client in clients.values():
        for container in client.api.containers(all=True, filters={"ancestor": image_id}):
            client.remove_container(container["Id"])
        try:
            client.api.remove_image(image_id, force=True)
        except Exception as error:  # already gone is fine; anything else is worth seeing
            if "No such image" not in str(error):
                raise InfraError(f"could not remove {image_id}: {error}") from None
