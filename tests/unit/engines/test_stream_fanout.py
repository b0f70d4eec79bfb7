"""The save/load fan-out's own logic (one export feeding several loads through bounded queues), with
stand-in engines: a target that fails must not stall the others, nor a slow one hold more than its queue."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines import shipping
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import ShipPlan, ship_image

IMAGE = "sha256:" + "cd" * 32
PIECES = [bytes([index]) * 16 for index in range(64)]


class Engine:
    def __init__(self, has_image=False, fail_after=None, delay=0.0, broken_export=False):
        self.has_image, self.fail_after, self.delay, self.broken_export = has_image, fail_after, delay, broken_export
        self.received: list[bytes] = []
        self.tags: list[str] = []

    def save_image(self, image_id):
        for index, piece in enumerate(PIECES):
            if self.broken_export and index == 10:
                raise InfraError("the export broke")
            yield piece

    def load_image(self, stream):
        for piece in stream:
            if self.fail_after is not None and len(self.received) >= self.fail_after:
                raise InfraError("disk full")
            time.sleep(self.delay)
            self.received.append(piece)
        self.has_image = True

    def image(self, image_id):
        return {"Id": image_id} if self.has_image else None

    def tag(self, image_id, repository, tag):
        self.tags.append(f"{repository}:{tag}")


def plan(targets):
    return ShipPlan(IMAGE, "stream", "src", list(targets), ["src"])


def test_every_target_gets_the_whole_stream_once_exported():
    engines = {"src": Engine(has_image=True), "a": Engine(), "b": Engine(delay=0.001)}
    result = ship_image(plan(["a", "b"]), engines)
    assert engines["a"].received == PIECES and engines["b"].received == PIECES
    assert engines["a"].tags == [f"{shipping.SHIPPED_REPOSITORY}:{shipping.ship_tag(IMAGE)}"]
    assert set(result.per_engine) == {"load on a", "load on b"}


def test_a_failing_target_is_named_and_does_not_stall_the_others():
    engines = {"src": Engine(has_image=True), "a": Engine(fail_after=3), "b": Engine()}
    with pytest.raises(InfraError, match=r"failed on engine a: disk full"):
        ship_image(plan(["a", "b"]), engines)
    assert engines["b"].received == PIECES


def test_a_broken_export_fails_every_target():
    engines = {"src": Engine(has_image=True, broken_export=True), "a": Engine(), "b": Engine()}
    with pytest.raises(InfraError, match="the export broke"):
        ship_image(plan(["a", "b"]), engines)
    assert not engines["a"].has_image and not engines["b"].has_image


def test_a_slow_target_holds_at_most_its_queue(monkeypatch):
    monkeypatch.setattr(shipping, "QUEUE_DEPTH", 2)
    gate = threading.Event()

    class Slow(Engine):
        def load_image(self, stream):
            gate.wait(5)
            super().load_image(stream)

    source = Engine(has_image=True)
    exported = []

    def counting_save(image_id):
        for piece in PIECES:
            exported.append(piece)
            yield piece

    source.save_image = counting_save
    engines = {"src": source, "a": Slow()}
    worker = threading.Thread(target=ship_image, args=(plan(["a"]), engines))
    worker.start()
    deadline = time.monotonic() + 10
    while len(exported) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for the export to run ahead, were it not held back
    assert len(exported) == 2 + 1  # the queue plus the piece waiting to be put
    gate.set()
    worker.join(10)
    assert engines["a"].received == PIECES
