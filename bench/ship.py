"""The ship benchmark: how long an image takes to reach the three engines of the rig (make engines).

Every round removes the image from the rig's engines, then ships it from the local engine to all three:
registry  push once to the rig's registry (a new repository each round, so the layers are uploaded
          again), pull by digest on the three engines in parallel, check the IDs
stream    one `docker save` on the local engine streamed into `docker load` on the three engines at once

The image is the demo's (demo/hello, the newest) when the local engine has it, else the base image
(the demo image is the base plus a few MB). Images shipped here are removed from the rig engines at the
end; the local engine is not changed.

Usage: .venv/bin/python bench/ship.py [--runs N] [--base IMAGE]   (or bench/run.py ship)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import uuid

from measure import BenchError, ensure_collection_link, machine_facts, say

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))

DEMO_REPOSITORY = "demo/hello"


def run(args: argparse.Namespace) -> dict:
    ensure_collection_link()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "collections"))
    from engines_support import remove_everywhere, rig_description, rig_engines

    from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import connect_engines, image_presence
    from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import (
        Registry,
        plan_shipping,
        ship_image,
    )

    description = rig_description()
    if description is None:
        raise BenchError("the engine rig is not up; run 'make engines' first")
    engines = rig_engines(description)
    reached = connect_engines(engines)
    if reached.down:
        raise BenchError(f"rig engine(s) {', '.join(reached.down)} are down; run 'make engines'")
    local = DockerClient(None)
    demo = local.images_with_label("immutable.infra.inputs_hash", limit=None)
    demo = [image for image in demo if any(tag.startswith(DEMO_REPOSITORY + ":") for tag in image.get("RepoTags") or [])]
    image = demo[0] if demo else local.image(args.base)
    if image is None:
        raise BenchError(f"neither {DEMO_REPOSITORY} nor {args.base} is in the local engine; run 'make setup'")
    image_id, size = image["Id"], image["Size"]
    label = (image.get("RepoTags") or [image_id])[0]
    say(f"shipping {label} ({size / 1e6:.0f} MB) to {', '.join(engine.name for engine in engines)}, {args.runs} rounds")
    clients = {"local": local, **reached.clients}
    names = [engine.name for engine in engines]
    timings: dict[str, list[float]] = {"registry": [], "stream": []}
    try:
        for round_number in range(1, args.runs + 1):
            for method in ("registry", "stream"):
                remove_everywhere(reached.clients, image_id)
                registry = Registry(description["registry"], repository=f"bench/ship-{uuid.uuid4().hex[:8]}")
                plan = plan_shipping(image_id, image_presence(clients, image_id), names, registry, method)
                result = ship_image(plan, clients, registry)
                timings[method].append(result.seconds)
                say(f"round {round_number} {method}: {result.seconds:.1f} s "
                    f"({', '.join(f'{step} {seconds:.1f}' for step, seconds in result.per_engine.items())})")
    finally:
        remove_everywhere(reached.clients, image_id)
    rows = [[method, f"{statistics.median(values):.1f}", f"{min(values):.1f}", f"{max(values):.1f}",
             f"{size * len(names) / 1e6 / statistics.median(values):.0f}"] for method, values in timings.items()]
    return {"machine": machine_facts(), "image": label, "image_id": image_id, "size_bytes": size,
            "engines": names, "seconds": timings,
            "tables": [{"title": f"ship {label} ({size / 1e6:.0f} MB) to {len(names)} engines, {args.runs} rounds",
                        "header": ["method", "median s", "min s", "max s", "MB/s delivered"], "rows": rows}]}


if __name__ == "__main__":
    from run import main
    sys.exit(main(["ship", *sys.argv[1:]]))
