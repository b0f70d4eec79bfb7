"""Several real engines (the rig: make engines): TLS, plain TCP refused, images shipped by registry (open
or with basic auth) and by save/load with their ID unchanged, a registry that is down or refuses the
credentials, containers reachable across engines."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid

import pytest
from engines_support import remove_everywhere, rig_or_skip, unique_image
from support import image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verdict_volume_name
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient, Endpoint, TLSConfig
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.clients import connect_engines, image_presence
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.declaration import parse_engines
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import (
    SHIPPED_REPOSITORY,
    Registry,
    parse_registry,
    plan_shipping,
    ship_image,
    ship_tag,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.verdicts import copy_verdict, fleet_verdict
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import record_verdict, verdict_for

pytestmark = pytest.mark.rig


@pytest.fixture(scope="module")
def rig():
    return rig_or_skip()


@pytest.fixture
def shipped(rig, base_image):
    """A fresh image on the local engine only, and every engine's client; removed everywhere after."""
    clients = rig[2]
    local = DockerClient(None)
    image_id = unique_image(local, base_image.id, image_name("ship"))
    everyone = {"local": local, **clients}
    yield image_id, everyone
    remove_everywhere(clients, image_id)
    for client in everyone.values():
        client.remove_volume(verdict_volume_name(image_id))


def test_tls_engine_answers_with_client_certificates_and_refuses_without(rig):
    description, engines, clients = rig
    engine = engines[0]
    assert clients[engine.name].api.info()["ServerVersion"]
    files = description["engines"][0]["tls"]
    with pytest.raises(InfraError, match="Cannot reach the Docker engine"):
        DockerClient(Endpoint(engine.docker_host, TLSConfig(ca_path=files["ca_cert"]), timeout=10))
    with pytest.raises(InfraError, match="Cannot reach the Docker engine"):
        DockerClient(Endpoint(engine.docker_host, timeout=10))  # plain TCP to a TLS port
    with pytest.raises(InfraError, match=r"The TLS file /nonexistent/key.pem \(client_key\) does not exist"):
        DockerClient(Endpoint(engine.docker_host, TLSConfig(ca_path=files["ca_cert"], client_cert=files["client_cert"],
                                                            client_key="/nonexistent/key.pem")))


def _own_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))  # UDP connect sends nothing; it only picks the outgoing address
        return probe.getsockname()[0]


def test_plain_tcp_to_a_non_loopback_address_is_refused_before_connecting(rig):
    engines = rig[1]
    port = engines[0].docker_host.rsplit(":", 1)[1]
    address = _own_address()
    assert not address.startswith("127.")
    with pytest.raises(InfraError, match="plain TCP to another machine"):
        parse_engines([{"name": "far", "docker_host": f"tcp://{address}:{port}"}])
    allowed = parse_engines([{"name": "far", "docker_host": f"tcp://{address}:{port}", "allow_insecure": True,
                             "timeout": 5}])
    reached = connect_engines(allowed)  # said explicitly: tried, and the rig listens on loopback only
    assert list(reached.down) == ["far"]
    with pytest.raises(InfraError, match=r"Engine\(s\) far cannot be reached .* Nothing was changed"):
        reached.require_all()


def test_ship_through_the_registry_keeps_the_image_id_on_three_engines(rig, shipped):
    description, engines = rig[0], rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines]
    registry = Registry(description["registry"], repository=f"itest/{uuid.uuid4().hex[:8]}")
    presence = image_presence(clients, image_id)
    assert presence == {"local": True, **dict.fromkeys(names, False)}
    plan = plan_shipping(image_id, presence, names, registry)
    assert (plan.method, plan.source, plan.targets) == ("registry", "local", names)
    local_tags = clients["local"].image(image_id)["RepoTags"]

    result = ship_image(plan, clients, registry)

    assert result.digest and result.digest.startswith("sha256:")
    for name in names:
        pulled = clients[name].image(image_id)
        assert pulled is not None and pulled["Id"] == image_id
        assert f"{SHIPPED_REPOSITORY}:{ship_tag(image_id)}" in pulled["RepoTags"]
        assert f"{registry.address}/{registry.repository}@{result.digest}" in pulled["RepoDigests"]
    assert clients["local"].image(image_id)["RepoTags"] == local_tags  # the push tag is gone again
    again = plan_shipping(image_id, image_presence(clients, image_id), names, registry)
    assert again.method == "none"


def _authenticated(description: dict, **changes) -> Registry:
    return parse_registry(dict(description["auth_registry"], repository=f"itest/{uuid.uuid4().hex[:8]}", **changes))


def test_ship_through_a_registry_with_basic_auth_passes_the_credentials_to_each_engine(rig, shipped):
    description, engines = rig[0], rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines[:2]]
    registry = _authenticated(description)
    plan = plan_shipping(image_id, image_presence(clients, image_id), names, registry)

    result = ship_image(plan, clients, registry)

    for name in names:  # no engine has logged in: the credentials came with each pull
        assert clients[name].image(image_id)["Id"] == image_id
        assert f"{registry.address}/{registry.repository}@{result.digest}" in clients[name].image(image_id)["RepoDigests"]


@pytest.mark.parametrize("credentials, expected", [
    ({"username": None, "password": None}, "asks for credentials; give registry.username and registry.password"),
    ({"password": "not-the-password"}, "refused the credentials of user rig"),
], ids=["none-given", "wrong-password"])
def test_a_registry_refusing_the_credentials_is_a_clear_error_and_changes_nothing(rig, shipped, credentials, expected):
    description, engines = rig[0], rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines]
    registry = _authenticated(description, **credentials)
    local_before = clients["local"].image(image_id)
    plan = plan_shipping(image_id, image_presence(clients, image_id), names, registry)

    with pytest.raises(InfraError, match=rf"The registry {registry.address} {expected}.* Nothing was pushed or pulled"):
        ship_image(plan, clients, registry)

    assert image_presence(clients, image_id) == {"local": True, **dict.fromkeys(names, False)}
    assert clients["local"].image(image_id)["RepoTags"] == local_before["RepoTags"]


def test_ship_by_save_and_load_streams_to_three_engines(rig, shipped):
    engines = rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines]
    plan = plan_shipping(image_id, image_presence(clients, image_id), names, None)
    assert plan.method == "stream"

    result = ship_image(plan, clients)

    assert sorted(result.per_engine) == sorted(f"load on {name}" for name in names)
    for name in names:
        loaded = clients[name].image(image_id)
        assert loaded is not None and loaded["Id"] == image_id
        assert loaded["Config"]["Labels"]["immutable.infra.test"] == "ship"


def test_registry_down_is_a_clear_error_and_changes_nothing(rig, shipped):
    engines = rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again: nothing listens there
    registry = Registry(f"127.0.0.1:{port}")
    local_before = clients["local"].image(image_id)
    plan = plan_shipping(image_id, image_presence(clients, image_id), names, registry)

    with pytest.raises(InfraError, match=rf"The registry 127.0.0.1:{port} does not answer .* Nothing was pushed or pulled"):
        ship_image(plan, clients, registry)

    assert image_presence(clients, image_id) == {"local": True, **dict.fromkeys(names, False)}
    after = clients["local"].image(image_id)
    assert (after["RepoTags"], after.get("RepoDigests")) == (local_before["RepoTags"], local_before.get("RepoDigests"))


def test_an_image_missing_everywhere_is_named(rig):
    engines, clients = rig[1], rig[2]
    missing = "sha256:" + uuid.uuid4().hex * 2
    with pytest.raises(InfraError, match=r"is on none of the engines \(rig1, rig2, rig3\)"):
        plan_shipping(missing, image_presence(clients, missing), [engine.name for engine in engines], None)


def test_the_verdict_travels_with_the_image_and_the_newest_wins(rig, shipped):
    engines = rig[1]
    image_id, clients = shipped
    names = [engine.name for engine in engines]
    record_verdict(clients["local"], image_id, True, {"time": "2026-01-01T00:00:01Z", "verified_by": "test"})
    assert copy_verdict(clients, image_id, names) == names
    assert all(verdict_for(clients[name], image_id)["immutable.infra.verdict"] == "passed" for name in names)
    record_verdict(clients[names[1]], image_id, False, {"time": "2026-01-01T00:00:09Z", "verified_by": "test"})
    engine, labels = fleet_verdict(clients, image_id)
    assert (engine, labels["immutable.infra.verdict"]) == (names[1], "failed")
    assert copy_verdict(clients, image_id, names) == [names[0], names[2]]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status


def test_a_container_on_a_rig_engine_answers_at_its_address_and_its_published_port(rig, shipped):
    engines = rig[1]
    image_id, clients = shipped
    engine = engines[1]
    plan = plan_shipping(image_id, image_presence(clients, image_id), [engine.name], None)
    ship_image(plan, clients)
    sdk = clients[engine.name].sdk
    container = sdk.containers.run(image_id, ["python3", "-m", "http.server", "8080"], detach=True,
                                   name=f"itest-web-{uuid.uuid4().hex[:8]}", ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        published = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        assert address.startswith("10.231.")  # the engine's own bridge, not the main engine's
        deadline = time.monotonic() + 20
        while True:
            try:
                assert _get(f"http://{address}:8080/") == 200
                assert _get(f"http://127.0.0.1:{published}/") == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        container.remove(force=True)
