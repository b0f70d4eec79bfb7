# Copyright: immutable.infra contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The builder's facts, kept per base image and builder settings, so a bake does not gather them again.

Two builders started from the same base image, on the same engine, with the same settings, gather the
same facts except those that describe the one container or the moment: host name, environment, date
and time (all in Ansible's `min` subset, which every bake still gathers live) and momentary readings of
the machine (load, free memory and disk space, uptime), which a cached set gives as of the bake that
gathered them. So with Ansible's default subset (`all`), a bake that finds its facts here gathers only
`min` and takes the rest from the cache. The cache is a speed-up only: a controller without it gathers
everything, and nothing here is part of the inputs hash or of the image.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any

CACHE_ENV = "IMMUTABLE_INFRA_FACTS_CACHE"  # a directory, or "off"
LIVE_SUBSET = ["min"]
CACHED_SUBSET = ["all"]  # Ansible's default; other subsets are gathered as asked, every time
FORMAT = 1


def directory() -> str | None:
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "false", "no") else configured
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "immutable-infra", "facts")


def cache_key(settings: dict[str, Any]) -> str:
    """The key of a builder: base image ID, engine, and every builder setting that can change a fact."""
    return hashlib.sha256(json.dumps(dict(settings, format=FORMAT), sort_keys=True, default=str).encode()).hexdigest()


def applies(gather_subset: list[str]) -> bool:
    return list(gather_subset) == CACHED_SUBSET


def load(key: str) -> dict[str, Any] | None:
    where = directory()
    if not where:
        return None
    try:
        with open(os.path.join(where, f"{key}.json"), encoding="utf-8") as handle:
            facts = json.load(handle)
    except (OSError, ValueError):
        return None
    return facts if isinstance(facts, dict) and facts else None


def save(key: str, facts: dict[str, Any]) -> None:
    """Writes the facts atomically; a cache that cannot be written is left alone (it is only a speed-up)."""
    where = directory()
    if not where or not facts:
        return
    try:
        os.makedirs(where, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=where, prefix=".facts-")
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(facts, handle, default=str)
        os.replace(temporary, os.path.join(where, f"{key}.json"))
    except OSError:
        pass
