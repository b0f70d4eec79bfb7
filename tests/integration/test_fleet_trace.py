"""The read side over several engines (the rig: make engines), after real rollouts over three TLS engines
behind one real HAProxy: the fleet inventory (and a play through its connection variables), drift found
and healed on its engine under load, history per engine, and prune per engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from engines_support import remove_everywhere, rig_or_skip
from haproxy_support import HAProxyProcess
from rollout_support import BACKEND, SteadyLoad, remove_service, rollout_task, service_name
from support import Playbooks

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import verdict_volume_name

pytestmark = pytest.mark.rig


class Fleet:
    def __init__(self, description, engines, clients, images, service, proxy, workdir):
        self.description, self.engines, self.clients = description, engines, clients
        self.images, self.service, self.proxy, self.workdir = images, service, proxy, workdir
        self.ledger = os.path.join(workdir, "ledger.jsonl")
        self.project = Playbooks(workdir)

    @property
    def engines_option(self):
        return [{"name": engine["name"], "docker_host": engine["docker_host"], "tls": engine["tls"]}
                for engine in self.description["engines"]]

    def run(self, task: dict, check: bool = False) -> dict:
        name = task["name"]
        return self.project.run([task], check=check, env={"IMMUTABLE_INFRA_LEDGER": self.ledger})[name]

    def module(self, module: str, **options) -> dict:
        return self.run({"name": module, f"immutable.infra.{module}": dict(options, engines=self.engines_option)})

    def hosts(self, include_stopped=False):
        """(name, engine, state) of the service's hosts on every engine."""
        found = []
        for engine, client in self.clients.items():
            for container in client.containers_with_labels({"immutable.infra.service": self.service},
                                                           include_stopped=include_stopped):
                found.append((container["Name"].lstrip("/"), engine, container["State"]["Status"]))
        return sorted(found)

    def write_engines_inventory(self) -> str:
        """The engines as an inventory group with their TLS files in group variables."""
        tls = self.description["engines"][0]["tls"]
        lines = ["[docker_engines]"] + [f"{engine['name']} docker_host={engine['docker_host']}"
                                        for engine in self.description["engines"]]
        lines += ["", "[docker_engines:vars]", "docker_validate_certs=true", f"docker_ca_path={tls['ca_cert']}",
                  f"docker_client_cert={tls['client_cert']}", f"docker_client_key={tls['client_key']}"]
        path = os.path.join(self.workdir, "engines.ini")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return path


@pytest.fixture(scope="module")
def fleet(docker_client, shared_hello):
    description, engines, clients = rig_or_skip()
    images = shared_hello({"1.0": {}, "2.0": {}})
    service = service_name()
    workdir = tempfile.mkdtemp(prefix="fleet-trace-")
    proxy = HAProxyProcess(tempfile.mkdtemp(prefix="haproxy-"), (BACKEND,)).start()
    state = Fleet(description, engines, clients, images, service, proxy, workdir)
    try:
        for version in ("1.0", "2.0"):
            task = rollout_task(service, images[version], proxy, engines=state.engines_option,
                                registry={"address": description["registry"]})
            result = state.run(task)
            assert result["changed"] and not result.get("failed"), result.get("msg")
        yield state
    finally:
        proxy.stop()
        shutil.rmtree(proxy.directory, ignore_errors=True)
        for client in clients.values():
            remove_service(client.sdk, service)
        for image_id in images.values():
            remove_everywhere(clients, image_id)
            for client in clients.values():
                client.remove_volume(verdict_volume_name(image_id))
        shutil.rmtree(workdir, ignore_errors=True)


def unwrapped(value):
    """ansible-inventory --list marks inventory text as {"__ansible_unsafe": text}; the text itself."""
    if isinstance(value, dict):
        return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else \
            {key: unwrapped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrapped(item) for item in value]
    return value


def live(fleet):
    return [(name, engine) for name, engine, state in fleet.hosts() if state == "running"]


def test_the_inventory_lists_every_engine_with_a_group_each_and_plays_reach_the_hosts(fleet):
    engines_inventory = fleet.write_engines_inventory()
    fleet_inventory = os.path.join(fleet.workdir, "web.fleet.yml")
    with open(fleet_inventory, "w", encoding="utf-8") as handle:
        json.dump({"plugin": "immutable.infra.fleet", "engines_group": "docker_engines", "services": [fleet.service]},
                  handle)
    listed = subprocess.run([sys.executable, "-m", "ansible.cli.inventory", "-i", engines_inventory, "-i",
                             fleet_inventory, "--list"], capture_output=True, text=True, check=True)
    inventory = unwrapped(json.loads(listed.stdout))
    hostvars = inventory["_meta"]["hostvars"]
    running = live(fleet)
    assert len(running) == 3 and {engine for _name, engine in running} == {"rig1", "rig2", "rig3"}
    for name, engine in running:
        assert hostvars[name]["immutable_infra"]["engine"] == engine
        assert name in inventory[f"engine_{engine}"]["hosts"]
        assert f"--host {fleet.description['engines'][int(engine[-1]) - 1]['docker_host']} --tlsverify" in \
            hostvars[name]["ansible_docker_extra_args"]
    assert sorted(inventory[f"{fleet.service}_live"]["hosts"]) == [name for name, _engine in running]

    # The variables are enough for community.docker.docker to reach a host on a TLS engine.
    reached = subprocess.run([sys.executable, "-m", "ansible.cli.adhoc", "-i", engines_inventory, "-i",
                              fleet_inventory, f"{fleet.service}_live", "-m", "ansible.builtin.raw", "-a",
                              "cat /etc/hello/hello.json"], capture_output=True, text=True, check=False,
                             env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert reached.returncode == 0, reached.stdout[-2000:] + reached.stderr[-2000:]
    assert reached.stdout.count("CHANGED") + reached.stdout.count("SUCCESS") == 3, reached.stdout


def test_history_names_each_hosts_engine_and_where_each_image_is(fleet):
    history = fleet.module("history", service=fleet.service)
    assert not history.get("failed"), history.get("msg")
    latest = history["revisions"][0]
    assert latest["live"] and latest["image_id"] == fleet.images["2.0"]
    assert latest["image_engines"] == ["rig1", "rig2", "rig3"]
    assert latest["verdict"]["result"] == "passed"  # recorded on the local engine, copied by the rollout's shipping
    assert {entry["engine"] for entry in latest["added"]} == {"rig1", "rig2", "rig3"}
    assert sum(latest["engines"].values()) == 3
    assert history["table"][1].split()[-1] == "ENGINES"
    first = history["revisions"][-1]
    assert {entry["state"] for entry in first["added"]} == {"exited"}  # kept stopped for rollback, per engine


def test_drift_is_found_on_its_engine_and_healed_there_under_load(fleet):
    name, engine = live(fleet)[1]
    client = fleet.clients[engine]
    container = client.container(name)
    code, output = client.exec(container["Id"], ["sh", "-c", "echo hotfix > /etc/hello/hotfix"])
    assert code == 0, output
    found = fleet.module("drift", service=fleet.service)
    assert [(entry["host"], entry["engine"]) for entry in found["drifted"]] == [(name, engine)], found
    assert "filesystem: added /etc/hello/hotfix" in found["drifted"][0]["reasons"]
    assert found["balancer_mismatch"] == []

    with SteadyLoad(fleet.proxy.url("web"), rate=100, max_seconds=60) as load:
        healed = fleet.module("drift", service=fleet.service, heal=True,
                              balancer={"runtime_api": fleet.proxy.runtime_api, "backend": "web"})
    assert healed["changed"] and [entry["host"] for entry in healed["healed"]] == [name], healed.get("msg")
    replacement = healed["healed"][0]["replacement"]
    assert (replacement, engine) in live(fleet) and (name, engine) not in live(fleet)
    assert load.summary()["failed"] == 0, load.summary()
    assert fleet.module("drift", service=fleet.service)["drifted"] == []


def test_prune_decides_generations_fleet_wide_and_removes_images_per_engine(fleet):
    would = fleet.run({"name": "prune", "immutable.infra.prune": {
        "service": fleet.service, "keep_previous": 0, "keep_images": 0, "builders": False,
        "engines": fleet.engines_option}}, check=True)
    assert would["changed"], would.get("msg")
    assert {entry["engine"] for entry in would["removed"]["hosts"]} == {"rig1", "rig2", "rig3"}
    assert all(entry["name"].startswith(f"{fleet.service}-1-") for entry in would["removed"]["hosts"])
    old = [entry for entry in would["removed"]["images"] if entry["id"] == fleet.images["1.0"]]
    assert sorted(entry["engine"] for entry in old) == ["rig1", "rig2", "rig3"]
    assert all(entry["id"] != fleet.images["2.0"] for entry in would["removed"]["images"])
    assert len(fleet.hosts(include_stopped=True)) == 6  # check mode removed nothing

    pruned = fleet.module("prune", service=fleet.service, keep_previous=0, keep_images=0, builders=False)
    assert pruned["changed"] and not pruned["skipped"], pruned.get("msg")
    assert [state for _name, _engine, state in fleet.hosts(include_stopped=True)] == ["running"] * 3
    for engine, client in fleet.clients.items():
        assert client.image(fleet.images["1.0"]) is None, engine
        assert client.image(fleet.images["2.0"]) is not None, engine
    with open(fleet.ledger, encoding="utf-8") as handle:
        record = [json.loads(line) for line in handle if '"prune"' in line][-1]
    assert sorted(record["engines"]) == ["rig1", "rig2", "rig3"]
