"""A Docker engine that stops answering is a sentence, not the HTTP library's traceback."""

from __future__ import annotations

import pytest
import requests
import urllib3
from docker.errors import NotFound

from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import EngineCalls, EngineUnreachable
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.streams import Streams


class Api:
    def inspect_container(self, name):
        raise requests.exceptions.ConnectionError(("Connection aborted.", FileNotFoundError(2, "No such file or directory")))

    def push(self, repository, **options):
        raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=120)")

    def remove_container(self, name, **options):
        raise NotFound("gone")

    def info(self):
        return {"ServerVersion": "20.10"}


def test_a_lost_connection_names_the_engine():
    calls = EngineCalls(Api(), "unix:///var/run/docker.sock")
    with pytest.raises(EngineUnreachable) as lost:
        calls.inspect_container("web-1-1")
    assert lost.value.message.startswith("the Docker engine at unix:///var/run/docker.sock stopped answering")
    assert "No such file or directory" in lost.value.message
    assert lost.value.details == {"engine": "unix:///var/run/docker.sock"}


def test_a_timed_out_call_names_the_engine_and_the_timeout():
    with pytest.raises(EngineUnreachable, match=r"^the Docker engine at tcp://127.0.0.1:2376 stopped answering "
                                                r"\(ReadTimeout: Read timed out. \(read timeout=120\)\)$"):
        EngineCalls(Api(), "tcp://127.0.0.1:2376").push("registry.test/hello", tag="2")


def test_engine_answers_and_api_errors_pass_through_unchanged():
    calls = EngineCalls(Api(), "unix:///var/run/docker.sock")
    assert calls.info() == {"ServerVersion": "20.10"}
    with pytest.raises(NotFound):
        calls.remove_container("web-1-1", force=True)


class StreamingApi:
    """An engine that sends the first piece of an image, then goes away mid-stream."""

    def get_image(self, image, chunk_size):
        yield b"first piece"
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead(0 bytes read, 512 more expected)")

    def load_image(self, data, quiet):
        yield {"stream": "Loading layer"}
        raise requests.exceptions.ChunkedEncodingError("Connection broken: InvalidChunkLength(got length b'', 0 bytes read)")


class Streaming(Streams):
    def __init__(self, api):
        self.api = api


def test_an_engine_lost_in_the_middle_of_a_stream_is_a_sentence_naming_it():
    client = Streaming(EngineCalls(StreamingApi(), "tcp://10.0.0.7:2376"))
    pieces = client.save_image("sha256:abc")
    assert next(pieces) == b"first piece"
    with pytest.raises(EngineUnreachable, match=r"^the Docker engine at tcp://10.0.0.7:2376 stopped answering "
                                                r"\(ProtocolError: .*IncompleteRead"):
        next(pieces)
    with pytest.raises(EngineUnreachable, match=r"stopped answering \(ChunkedEncodingError: .*InvalidChunkLength"):
        client.load_image([b"data"])
