"""immutable.infra.bake against a real Docker engine, with roles written for ordinary servers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import docker
import pytest
import requests
from support import BASE_IMAGE, containers_created, image_name, init_git, output_of

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "bake_project")


@pytest.fixture
def roles_project(tmp_path, project):
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    project.commit = init_git(str(tmp_path))
    project.path = tmp_path
    return project


def bake(name, roles, nonce=None, **options):
    return {"name": "bake", "immutable.infra.bake": dict(
        name=name, base=BASE_IMAGE, roles=roles, vars=dict(options.pop("vars", {}), test_nonce=nonce or uuid.uuid4().hex),
        **options)}


@pytest.fixture
def builder_network(docker_client):
    """A network of the test's own for its bakes' builders (the network option): a builder on it is this
    test's, whatever other runs bake on the same engine at the time."""
    name = f"itest-{uuid.uuid4().hex[:12]}"
    docker_client.api.create_network(name, driver="bridge")
    yield name
    docker_client.api.remove_network(name)


@pytest.fixture
def new_builders(docker_client, builder_network):
    """The builder containers on the test's network (ID, name and state, from the engine's list)."""
    return lambda: docker_client.api.containers(all=True, filters={"network": builder_network})


def container_creations(client, since, inputs_hash=""):
    """Builders started since `since` for that inputs hash (unique to the test: it bakes with a nonce)."""
    return containers_created(client, since, (f"immutable-infra-bake-{inputs_hash[:12]}",))


def network_joins(client, since, network):
    """Containers that joined the network since `since`: a builder of a bake on that network."""
    events = client.events(since=since, until=time.time() + 0.5, decode=True,
                           filters={"type": "network", "event": "connect", "network": network})
    return [event.get("Actor", {}).get("Attributes", {}).get("container") for event in events]


def test_server_role_bakes_unmodified_into_a_working_image(roles_project, docker_client, base_image, new_builders,
                                                           builder_network):
    name = image_name("web")
    run = roles_project.run([bake(name, ["web"], vars={"web_version": "1.4"}, network=builder_network, config={
        "cmd": ["nginx", "-g", "daemon off;"], "exposed_ports": ["8080"], "env": {"APP_ENV": "prod"},
        "workdir": "/srv/app", "labels": {"team": "web"}})])
    result = run["bake"]
    assert run.returncode == 0, run.output
    assert result["changed"] and not result["cache_hit"]
    assert result["image"] == f"{name}:{result['inputs_hash'][:12]}"
    assert result["roles"] == ["common", "web"]
    assert "web : Restart nginx" in result["changed_tasks"]  # the handler ran

    image = docker_client.images.get(result["image_id"])
    assert result["image"] in image.tags
    config = image.attrs["Config"]
    assert config["Cmd"] == ["nginx", "-g", "daemon off;"] and not config["Entrypoint"]
    assert "APP_ENV=prod" in config["Env"] and config["WorkingDir"] == "/srv/app"
    assert "8080/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    assert labels["team"] == "web"
    assert labels["immutable.infra.inputs_hash"] == result["inputs_hash"]
    assert labels["immutable.infra.base_image_id"] == base_image.id
    assert labels["immutable.infra.roles"] == "common,web"
    assert labels["immutable.infra.ansible_core"]
    assert "community.docker=" in labels["immutable.infra.collections"]
    assert labels["org.opencontainers.image.revision"] == roles_project.commit
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/acme/ops.git"
    assert labels["org.opencontainers.image.created"].endswith("Z")

    # The image holds what the roles made, and nothing of the bake itself.
    listing = output_of(docker_client, result["image_id"], [
        "sh", "-c", "id app; cat /etc/nginx/sites-enabled/default; ls /etc/systemd/system/multi-user.target.wants;"
        " ls -A /var/lib/apt/lists /root /usr/local/sbin; ls /usr/sbin/policy-rc.d /run/systemd 2>&1; true"]).decode()
    assert "uid=" in listing and "listen 8080 default_server;" in listing
    assert "nginx.service" in listing  # enabled as systemctl enable would on a server
    assert ".ansible" not in listing and "systemctl" not in listing
    assert "No such file or directory" in listing  # policy-rc.d and /run/systemd are gone
    assert not new_builders()

    # The image's command starts the service the role installed.
    container = docker_client.containers.run(result["image_id"], detach=True)
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        deadline = time.monotonic() + 20
        while True:
            try:
                response = requests.get(f"http://{address}:8080/", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert response.text == "version 1.4 on Debian\n"
    finally:
        container.remove(force=True)


def test_unchanged_bake_is_a_cache_hit_and_starts_no_container(roles_project, docker_client, base_image):
    name, nonce = image_name("motd"), uuid.uuid4().hex
    task = bake(name, ["motd"], nonce=nonce, vars={"motd_owner": "ops"})
    first = roles_project.run([task])["bake"]
    assert first["changed"] and not first["cache_hit"], first

    since = time.time()
    second = roles_project.run([task])["bake"]
    assert (second["changed"], second["cache_hit"]) == (False, True)
    assert second["image_id"] == first["image_id"]
    assert second["labels"]["immutable.infra.inputs_hash"] == first["inputs_hash"]

    # Touching every file (new mtimes, same content) keeps the cache.
    for root, _dirs, files in os.walk(roles_project.path / "roles" / "motd"):
        for file in files:
            os.utime(os.path.join(root, file), (time.time() + 60, time.time() + 60))
    touched = roles_project.run([task])["bake"]
    assert touched["cache_hit"] and touched["image_id"] == first["image_id"]
    assert not container_creations(docker_client, since, first["inputs_hash"])

    # Changing a role file gives a new image, and check mode says why before anything is built.
    (roles_project.path / "roles/motd/templates/motd.j2").write_text("Welcome, {{ motd_owner }}.\n")
    images_before = {image["Id"] for image in docker_client.api.images(filters={"reference": name})}
    planned = roles_project.run([task], check=True)["bake"]
    assert planned["changed"] and planned["would_bake"] and planned["image_id"] is None
    assert any("role motd files changed" in reason for reason in planned["reasons"]), planned["reasons"]
    assert {image["Id"] for image in docker_client.api.images(filters={"reference": name})} == images_before

    rebaked = roles_project.run([task])["bake"]
    assert rebaked["changed"] and not rebaked["cache_hit"]
    assert rebaked["image_id"] != first["image_id"] and rebaked["inputs_hash"] != first["inputs_hash"]
    motd = output_of(docker_client, rebaked["image_id"], ["cat", "/etc/motd"]).decode()
    assert motd == "Welcome, ops.\n"


def test_force_rebuilds_and_collection_roles_carry_their_version(roles_project, docker_client, base_image):
    name, nonce = image_name("stamp"), uuid.uuid4().hex
    env = {"ANSIBLE_COLLECTIONS_PATH": f"{roles_project.path / 'collections'}:{os.environ['ANSIBLE_COLLECTIONS_PATH']}"}
    first = roles_project.run([bake(name, ["acme.tools.stamp"], nonce=nonce)], env=env)["bake"]
    assert first["changed"], first
    assert first["roles"] == ["acme.tools.stamp@1.2.0"]
    assert "acme.tools=1.2.0" in first["labels"]["immutable.infra.collections"]
    forced = roles_project.run([bake(name, ["acme.tools.stamp"], nonce=nonce, force=True)], env=env)["bake"]
    assert forced["changed"] and forced["reasons"] == ["force: true"]
    assert forced["inputs_hash"] == first["inputs_hash"] and forced["image_id"] != first["image_id"]


def test_failing_role_fails_cleanly(roles_project, docker_client, base_image, new_builders, builder_network):
    name = image_name("broken")
    result = roles_project.run([bake(name, ["broken"], network=builder_network)])["bake"]
    assert result["failed"]
    assert "Run the migration" in result["msg"]
    assert "schema version mismatch" in result["msg"] and "migrating users" in result["msg"]
    assert result["failed_task"] == "broken : Run the migration"
    assert not docker_client.api.images(filters={"reference": name})
    assert not new_builders()

    again = roles_project.run([bake(name, ["broken"], keep_failed=True, network=builder_network)])["bake"]
    assert again["failed"] and again["kept_image"].startswith(f"{name}:failed-")
    kept = docker_client.images.get(again["kept_image"])
    assert output_of(docker_client, kept.id, ["cat", "/tmp/migration.log"]) == b"step 1\n"
    assert not new_builders()


def test_roles_pulled_in_by_include_role_are_hashed_and_templated_names_warned_about(roles_project):
    (roles_project.path / "roles/includer/tasks").mkdir(parents=True)
    (roles_project.path / "roles/includer/tasks/main.yml").write_text(
        "- ansible.builtin.include_role:\n    name: motd\n"
        "- ansible.builtin.include_role:\n    name: \"{{ flavour | default('motd') }}\"\n")
    run = roles_project.run([bake(image_name("includer"), ["includer"])], check=True)
    result = run["bake"]
    assert result["would_bake"] and result["roles"] == ["includer", "motd"], result
    assert "includes a role by a templated name ({{ flavour | default('motd') }})" in run.output


@pytest.mark.parametrize("change, message", [
    ({"roles": ["no_such_role"]}, "Role 'no_such_role' was not found in any role path"),
    ({"base": "immutable-infra/no-such-base:1"}, "Base image 'immutable-infra/no-such-base:1' is not in the local"),
    ({"config": {"commmand": ["x"]}}, "commmand"),
    ({"name": "Acme/Web:latest"}, "is not a valid image repository"),
    ({"roles": []}, "roles is empty"),
    ({"cleanup_paths": ["var/lib"]}, "must be an absolute path"),
])
def test_bad_input_is_refused_and_leaves_nothing(
        roles_project, docker_client, base_image, builder_network, change, message):
    name = image_name("bad")
    task = bake(name, ["motd"], network=builder_network)
    task["immutable.infra.bake"].update(change)
    since = time.time()
    result = roles_project.run([task])["bake"]
    assert result["failed"] and message in result["msg"], result["msg"]
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"]
    assert not network_joins(docker_client, since, builder_network)  # no builder was started
    assert not docker_client.api.images(filters={"reference": name})
    assert not docker_client.api.images(filters={"label": f"immutable.infra.name={name}"})


def test_interrupted_bake_removes_its_builder(roles_project, docker_client, base_image, new_builders, builder_network):
    playbook = roles_project.path / "interrupted.yml"
    task = bake(image_name("slow"), ["slow"], network=builder_network)
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    process = subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", str(playbook)], cwd=roles_project.path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(_has_file(docker_client, container["Id"], "/tmp/slow-started")
                      for container in new_builders() if container["State"] == "running"):
            assert time.monotonic() < deadline and process.poll() is None, "the slow task never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    deadline = time.monotonic() + 20
    while new_builders():
        assert time.monotonic() < deadline, f"the builder was left behind:\n{output[-2000:]}"
        time.sleep(0.2)
    assert not docker_client.api.images(filters={"reference": image_name("slow")})


def _has_file(client, container_id: str, path: str) -> bool:
    try:
        execution = client.api.exec_create(container_id, ["test", "-e", path])
        client.api.exec_start(execution["Id"])
        return client.api.exec_inspect(execution["Id"])["ExitCode"] == 0
    except docker.errors.APIError:
        return False  # the builder is going away


def test_a_second_bake_from_the_same_base_takes_its_facts_from_the_cache(
        roles_project, docker_client, base_image, tmp_path):
    cache = tmp_path / "facts-cache"
    env = {"IMMUTABLE_INFRA_FACTS_CACHE": str(cache)}

    def facts_seen(result):
        assert result["changed"] and not result["cache_hit"], result
        return json.loads(output_of(docker_client, result["image_id"], ["cat", "/etc/builder-facts.json"]))
    first = facts_seen(roles_project.run([bake(image_name("facts"), ["facts"])], env=env)["bake"])
    assert first["gather_subset"] == ["all"] and first["virtualization_type"] == "docker"
    assert len(list(cache.iterdir())) == 1  # one base, one set of builder settings
    second = facts_seen(roles_project.run([bake(image_name("facts"), ["facts"])], env=env)["bake"])
    # Only Ansible's min subset was gathered; the rest (here the processor count) came from the cache, and
    # the facts of the one container (its host name) are its own.
    assert second["gather_subset"] == ["min"]
    assert (second["processor_count"], second["virtualization_type"]) == (first["processor_count"], "docker")
    assert second["hostname"] != first["hostname"]
