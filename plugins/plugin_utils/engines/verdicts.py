# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verdicts over several engines. A verdict binds to the image ID, which is the same on every engine,
so where verify ran does not matter:

- the fleet's verdict for an image is the newest record on any engine looked at (a failed
  re-verification recorded on one engine outweighs an older pass recorded elsewhere);
- shipping an image copies that record to the engines it reached, so every controller that talks to
  one engine sees the verdict there too (the ledger is a controller's file and is not the gate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import LABEL_TIME, verdict_volume_name
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient


def verdict_for(client: DockerClient, image_id: str) -> dict[str, str] | None:
    """The engine's verdict record for the image (verify/verdicts.py writes it), or None."""
    return client.volume_labels(verdict_volume_name(image_id))


def newest(records: Mapping[str, dict[str, str] | None]) -> tuple[str, dict[str, str]] | None:
    """(engine, labels) of the newest verdict among the engines' records; ties go to the first engine."""
    found = [(name, labels) for name, labels in records.items() if labels]
    if not found:
        return None
    return max(found, key=lambda item: (item[1].get(LABEL_TIME) or "", -list(records).index(item[0])))


def fleet_verdict(clients: Mapping[str, DockerClient], image_id: str) -> tuple[str, dict[str, str]] | None:
    return newest({name: verdict_for(client, image_id) for name, client in clients.items()})


def copy_verdict(clients: Mapping[str, DockerClient], image_id: str, targets: Sequence[str]) -> list[str]:
    """Copies the newest verdict to each target whose own record is missing or older; returns the
    engines written to."""
    records = {name: verdict_for(client, image_id) for name, client in clients.items()}
    best = newest(records)
    if best is None:
        return []
    labels = best[1]
    written = []
    for target in targets:
        own = records.get(target)
        if own is None or (own.get(LABEL_TIME) or "") < (labels.get(LABEL_TIME) or ""):
            clients[target].replace_volume(verdict_volume_name(image_id), dict(labels))
            written.append(target)
    return written
