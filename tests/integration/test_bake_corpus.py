"""Popular Galaxy roles, unmodified, baked at the defaults; each image is then run and probed as a user would.

The roles are read from ../shared/roles beside the checkout (never copied into the project). Every
role is baked once per session (module-scoped fixture) and once more to show the second bake is a
cache hit; the tests below share those bakes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import time
import uuid

import pytest
import requests
from support import BASE_IMAGE, REPO_ROOT, Playbooks, image_name, output_of, skip_unless_required


def corpus_dir() -> str:
    """../shared/roles beside the clone; for a git worktree, beside its main checkout too."""
    candidates = [os.path.join(REPO_ROOT, "..", "shared", "roles")]
    common = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=False).stdout.strip()
    if common:
        candidates.append(os.path.join(os.path.dirname(common), "..", "shared", "roles"))
    found = next((path for path in candidates if os.path.isdir(path)), candidates[0])
    return os.path.normpath(found)


CORPUS = corpus_dir()
ROLES = ("geerlingguy.nginx", "geerlingguy.apache", "geerlingguy.redis", "geerlingguy.mysql", "geerlingguy.php")


@pytest.fixture(autouse=True)
def corpus_present():
    if not all(os.path.isdir(os.path.join(CORPUS, role)) for role in ROLES):
        skip_unless_required(f"the roles corpus is not at {CORPUS} (a folder 'shared/roles' beside the checkout)")


# How the image's command starts each service at run time; the roles themselves are left as they are.
IMAGE_CONFIG = {
    "geerlingguy.nginx": {"cmd": ["nginx", "-g", "daemon off;"], "exposed_ports": ["80/tcp"], "stop_signal": "SIGQUIT"},
    "geerlingguy.apache": {"cmd": ["apache2ctl", "-D", "FOREGROUND"], "exposed_ports": ["80/tcp"],
                           "stop_signal": "SIGWINCH"},
    "geerlingguy.redis": {"cmd": ["redis-server", "/etc/redis/redis.conf", "--daemonize", "no"],
                          "exposed_ports": ["6379/tcp"], "user": "redis",
                          "healthcheck": {"test": ["redis-cli", "ping"], "interval": "2s", "retries": 3}},
    "geerlingguy.mysql": {"cmd": ["mariadbd", "--user=mysql"], "exposed_ports": ["3306/tcp"],
                          "volumes": ["/var/lib/mysql"]},
    "geerlingguy.php": {},
}
# The role's documented variables for a database and a user of it (README of geerlingguy.mysql).
MYSQL_VARS = {"mysql_databases": [{"name": "shop"}],
              "mysql_users": [{"name": "shop", "host": "%", "password": "shop-secret", "priv": "shop.*:ALL"}]}
STAND_INS = ("usr/local/sbin/systemctl", "usr/sbin/policy-rc.d", "etc/dpkg/dpkg.cfg.d/zz-immutable-infra-bake",
             "etc/apt/apt.conf.d/zz-immutable-infra-bake", "run/immutable-infra-bake", "run/systemd",
             "var/lib/dpkg/diversions-old", "root/.ansible")
# Where a systemctl may be: the stand-in's places (bookworm's systemd ships /bin/systemctl, which is
# /usr/bin/systemctl on a merged-/usr base).
SYSTEMCTLS = ("usr/local/sbin/systemctl", "usr/bin/systemctl", "bin/systemctl")


def short(role: str) -> str:
    return role.split(".", 1)[1]


class CorpusBakes:
    """Bakes each role on first use, cold (a nonce new to this session), then again unchanged; keeps both."""

    def __init__(self, project: Playbooks) -> None:
        self.project, self.nonce, self.results = project, uuid.uuid4().hex, {}

    def task(self, role: str) -> dict:
        return {"name": role, "immutable.infra.bake": {
            "name": image_name(f"corpus-{short(role)}"), "base": BASE_IMAGE, "roles": [role],
            "vars": dict(MYSQL_VARS if role == "geerlingguy.mysql" else {}, test_nonce=self.nonce),
            "config": IMAGE_CONFIG[role]}}

    def run(self, role: str, kind: str) -> dict:
        if (role, kind) not in self.results:
            if kind == "warm":
                self.cold(role)
            run = self.project.run([self.task(role)], env={"ANSIBLE_ROLES_PATH": CORPUS}, timeout=1200)
            self.results[role, kind] = dict(run[role], output=run.output)
        return self.results[role, kind]

    def cold(self, role: str) -> dict:
        result = self.run(role, "cold")
        assert not result.get("failed") and result["changed"] and not result["cache_hit"], \
            result.get("msg") or result["output"][-3000:]
        return result

    def warm(self, role: str) -> dict:
        return self.run(role, "warm")


@pytest.fixture(scope="module")
def corpus_bakes(tmp_path_factory, docker_client, base_image):
    return CorpusBakes(Playbooks(str(tmp_path_factory.mktemp("corpus"))))


def baked(corpus_bakes, role):
    return corpus_bakes.cold(role)


def wait_for(probe, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture
def start(docker_client):
    started = []

    def run(image_id, **options):
        container = docker_client.containers.run(image_id, detach=True, name=f"itest-corpus-{uuid.uuid4().hex[:8]}",
                                                 **options)
        started.append(container)
        container.reload()
        return container
    yield run
    for container in started:
        container.remove(force=True)


def address(container):
    return container.attrs["NetworkSettings"]["IPAddress"]


def http_get(container):
    response = requests.get(f"http://{address(container)}/", timeout=2)
    response.raise_for_status()
    return response


@pytest.mark.parametrize("role", ["geerlingguy.nginx", "geerlingguy.apache"])
def test_web_server_roles_serve_http(corpus_bakes, start, role):
    container = start(baked(corpus_bakes, role)["image_id"])
    response = wait_for(lambda: http_get(container))
    assert response.status_code == 200


def test_redis_role_answers_ping(corpus_bakes, start, docker_client):
    result = baked(corpus_bakes, "geerlingguy.redis")
    container = start(result["image_id"])
    answer = wait_for(lambda: _checked(container.exec_run(["redis-cli", "PING"])))
    assert answer.strip() == "PONG"
    config = docker_client.images.get(result["image_id"]).attrs["Config"]
    assert config["Healthcheck"] == {"Test": ["CMD", "redis-cli", "ping"], "Interval": 2_000_000_000, "Retries": 3}
    assert config["User"] == "redis"


def _checked(run):
    assert run.exit_code == 0, run.output
    return run.output.decode()


def test_mysql_role_configured_a_server_that_accepts_its_user(corpus_bakes, start, docker_client):
    result = baked(corpus_bakes, "geerlingguy.mysql")
    # The role started the server during the bake and created the database and the user through it.
    assert any("Ensure MySQL users are present" in task for task in result["changed_tasks"]), result["changed_tasks"]
    container = start(result["image_id"])
    login = ["mariadb", "-h", "127.0.0.1", "-u", "shop", "-pshop-secret", "shop", "-NBe", "SELECT CURRENT_USER()"]
    assert wait_for(lambda: _checked(container.exec_run(login))).strip() == "shop@%"
    # The bake stopped the server cleanly: the image's server starts without crash recovery.
    logs = container.logs().decode(errors="replace")
    assert "crash recovery" not in logs.lower(), logs[-2000:]
    assert docker_client.images.get(result["image_id"]).attrs["Config"]["Volumes"] == {"/var/lib/mysql": {}}


def test_php_role_runs_php(corpus_bakes, docker_client):
    result = baked(corpus_bakes, "geerlingguy.php")
    # Its packages pulled in systemd, whose systemctl did not displace the bake's; its handler's restart of
    # apache2 (php_enable_webserver defaults to true), which the image does not have, had nothing to do.
    assert "geerlingguy.php : restart webserver" in result["changed_tasks"], result["changed_tasks"]
    assert "apache2.service, which the image does not have" in " ".join(result["output"].split())
    output = output_of(docker_client, result["image_id"], ["php", "-r", "echo 6 * 7, PHP_EOL;"])
    assert output.decode().strip() == "42"


@pytest.mark.parametrize("role", ROLES)
def test_second_bake_is_a_cache_hit(corpus_bakes, role, record_property):
    first, second = baked(corpus_bakes, role), corpus_bakes.warm(role)
    assert (second["changed"], second["cache_hit"], second["image_id"]) == (False, True, first["image_id"])
    # The bound for a cache hit (it takes tens of milliseconds; the bound leaves room for a busy machine).
    assert second["duration"] <= 1.0, second["duration"]
    record_property("cold_bake_seconds", first["duration"])
    record_property("warm_bake_seconds", second["duration"])
    print(f"{role}: cold bake {first['duration']:.1f} s, second bake {second['duration']:.3f} s")


def top_layer_members(docker_client, image_id, base_id, read=()):
    """Paths in the layers an image has on top of its base (what `docker diff` showed before the commit),
    and the content of the files among them whose path is in `read`."""
    base_layers = set(docker_client.images.get(base_id).attrs["RootFS"]["Layers"])
    members: dict[str, list[tarfile.TarInfo]] = {}
    contents: dict[str, dict[str, bytes]] = {}

    class Hashing:
        def __init__(self, raw):
            self.raw, self.digest = raw, hashlib.sha256()

        def read(self, size=-1):
            data = self.raw.read(size)
            self.digest.update(data)
            return data

    stream = _ChunkReader(docker_client.api.get_image(image_id))
    with tarfile.open(fileobj=stream, mode="r|") as outer:
        for member in outer:
            if not member.name.endswith("layer.tar"):
                continue
            reader = Hashing(outer.extractfile(member))
            entries, read_here = [], {}
            with tarfile.open(fileobj=reader, mode="r|") as layer:
                for entry in layer:
                    entries.append(entry)
                    if entry.name in read and entry.isfile():
                        read_here[entry.name] = layer.extractfile(entry).read()
            while reader.read(1 << 20):
                pass
            digest = "sha256:" + reader.digest.hexdigest()
            members[digest], contents[digest] = entries, read_here
    top = [digest for digest in members if digest not in base_layers]
    return ([entry for digest in top for entry in members[digest]],
            {name: data for digest in top for name, data in contents[digest].items()})


class _ChunkReader:
    def __init__(self, chunks):
        self.chunks, self.buffer = iter(chunks), b""

    def read(self, size=-1):
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if size < 0:
            data, self.buffer = self.buffer, b""
        else:
            data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


# nginx (a forking server with a pid file), mysql (a server with data and a socket), php (whose packages
# install systemd's own systemctl during the bake).
@pytest.mark.parametrize("role, made_by_role", [("geerlingguy.nginx", "usr/sbin/nginx"),
                                                ("geerlingguy.mysql", "usr/sbin/mariadbd"),
                                                ("geerlingguy.php", "usr/bin/php8.2")])
def test_nothing_of_the_builder_or_the_started_server_is_left_in_the_image(
        corpus_bakes, docker_client, base_image, role, made_by_role):
    result = baked(corpus_bakes, role)
    entries, contents = top_layer_members(docker_client, result["image_id"], base_image.id, read=SYSTEMCTLS)
    names = [entry.name.rstrip("/") for entry in entries]
    assert made_by_role in names  # the layer is the role's work
    left = [name for name in names if any(name == path or name.startswith(path + "/") or
                                          name.endswith("/.wh." + path.rsplit("/", 1)[-1]) for path in STAND_INS)]
    assert not left, left
    # A systemctl in the layer is one a package installed (php's systemd), never the stand-in.
    assert not [name for name, data in contents.items() if b"IMMUTABLE_INFRA_UNIT" in data], sorted(contents)
    if role == "geerlingguy.php":
        assert "usr/bin/systemctl" in contents
    # Sockets never reach a layer (Docker's archiver skips them); pid files and Ansible's temp files would.
    runtime = [name for name in names if name.endswith((".pid", ".sock")) or "tmp/ansible" in name]
    assert not runtime, runtime
