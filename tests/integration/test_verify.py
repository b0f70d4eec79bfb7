"""immutable.infra.verify against a real Docker engine: throwaway hosts, JUnit verdicts, the gate, cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from xml.etree import ElementTree

import pytest
from support import BASE_IMAGE, REPO_ROOT, Playbooks, image_name

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.ledger import Ledger
from ansible_collections.immutable.infra.plugins.plugin_utils.docker.client import DockerClient
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.verdicts import require_verified, verdict_for

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "verify_project")
DEMO = os.path.join(REPO_ROOT, "examples", "demo")
SERVE = ["python3", "-m", "http.server", "8080", "--directory", "/srv/greeting"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, base_image):
    """Images baked once for the module: a good one, one whose command exits, one with a non-idempotent role,
    and the demo service."""
    project = tmp_path_factory.mktemp("verify_images")
    shutil.copytree(FIXTURE, project, dirs_exist_ok=True)
    nonce = uuid.uuid4().hex
    specs = {
        "good": (["greeting"], {"cmd": SERVE, "user": "greeter", "exposed_ports": ["8080/tcp"]}),
        "broken": (["greeting"], {"cmd": ["sh", "-c", "echo starting; echo 'config /etc/greeting.conf is missing' >&2;"
                                          " exit 3"]}),
        "stamped": (["greeting", "stamp"], {"cmd": ["sleep", "infinity"]}),
        "hello": ([os.path.join(DEMO, "roles", "hello")], {"cmd": ["/usr/local/bin/hello-server", "/etc/hello/hello.json"],
                                                           "user": "hello", "exposed_ports": ["8000/tcp"]}),
    }
    run = Playbooks(str(project)).run([
        {"name": kind, "immutable.infra.bake": {"name": image_name(f"verify-{kind}"), "base": BASE_IMAGE,
                                                "roles": roles, "config": config, "vars": {"nonce": nonce}}}
        for kind, (roles, config) in specs.items()])
    assert run.returncode == 0, run.output[-3000:]
    return {kind: run[kind] for kind in specs}


@pytest.fixture
def verify_project(tmp_path):
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    project = Playbooks(str(tmp_path))
    project.path = tmp_path
    return project


@pytest.fixture(scope="module")
def client():
    return DockerClient()


def verify(**options):
    return {"name": "verify", "immutable.infra.verify": options}


def verify_hosts(docker_client, image_id):
    """Throwaway hosts of image_id (other runs on the same engine verify other images)."""
    return docker_client.containers.list(all=True, filters={"label": f"immutable.infra.verifying={image_id}"})


@contextlib.contextmanager
def creations(docker_client, **filters):
    """Container creations matching filters while the block runs.

    They are streamed as they happen: the engine replays only its last 256 events, and the docker execs
    of a test run can push a creation out of that window.
    """
    created = []
    stream = docker_client.events(since=time.time(), decode=True,
                                  filters={"type": "container", "event": "create", **filters})

    def collect():
        try:
            for event in stream:
                created.append(event)
        except Exception:  # pylint: disable=broad-exception-caught  # the stream is closed below
            pass

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    try:
        yield created
    finally:
        time.sleep(0.5)  # events arrive a moment after the API calls that caused them
        stream.close()
        thread.join(5)


def ledger_record(ledger_id):
    return next(Ledger().records(id=ledger_id))


def test_passing_tests_give_a_passing_verdict_bound_to_the_image_id(verify_project, images, docker_client, client):
    good = images["good"]
    run = verify_project.run([verify(image=good["image"], tests=["tests/passing/"], idempotence=True)])
    result = run["verify"]
    assert run.returncode == 0 and result["passed"] is True, result.get("msg")
    assert result["image_id"] == good["image_id"] and result["image"] == good["image"]
    assert result["tests"] == {"total": 4, "passed": 4, "failed": 0, "errors": 0, "skipped": 0}
    assert result["failures"] == [] and result["broken"] is False
    assert result["idempotence"] == {"roles": ["greeting"], "passed": True, "changed_tasks": []}
    assert result["duration"] > 0 and {"start", "tests", "cleanup", "idempotence", "total"} <= set(result["timings"])
    assert result["changed"] is True  # the first verdict for this image
    report = ElementTree.parse(result["report"]).getroot()
    assert len(list(report.iter("testcase"))) == 4
    assert not verify_hosts(docker_client, good["image_id"])

    record = ledger_record(result["ledger_id"])
    assert record["kind"] == "verdict" and record["result"] == "passed"
    assert record["image_id"] == good["image_id"] and record["inputs_hash"] == good["inputs_hash"]
    assert record["tests"]["passed"] == 4 and record["report"] == result["report"]
    assert record["user"] and record["controller"] and record["time"]
    labels = verdict_for(client, good["image_id"])
    assert labels["immutable.infra.verdict"] == "passed"
    assert labels["immutable.infra.reference"] == good["image"]
    assert labels["immutable.infra.ledger_id"] == result["ledger_id"]
    assert json.loads(labels["immutable.infra.tests"])["total"] == 4
    assert require_verified(client, good["image"])["Id"] == good["image_id"]
    assert require_verified(client, good["image_id"])["Id"] == good["image_id"]

    again = verify_project.run([verify(image=good["image_id"], tests=["tests/passing/test_greeting.py"])])["verify"]
    assert again["passed"] and again["changed"] is False  # same verdict as before


def test_failing_test_fails_the_task_names_it_and_leaves_nothing(verify_project, images, docker_client, client):
    image_id = images["stamped"]["image_id"]
    with creations(docker_client, label=f"immutable.infra.verifying={image_id}") as created:
        result = verify_project.run([verify(image=image_id, tests=["tests/failing/test_failing.py"],
                                            wait_for_ports=[])])["verify"]
    assert result["failed"] and result["passed"] is False and not result["broken"]
    assert result["tests"] == {"total": 2, "passed": 1, "failed": 1, "errors": 0, "skipped": 0}
    assert result["failures"] == [{"test": "tests/failing/test_failing.py::test_greeting_is_formal",
                                   "message": "AssertionError: greeting is 'Hello, world'"}]
    assert "tests/failing/test_failing.py::test_greeting_is_formal: AssertionError: greeting is 'Hello, world'" \
        in result["msg"]
    assert "test_greeting_exists" not in result["msg"]
    assert os.path.exists(result["report"])
    assert len(created) == 1
    assert not verify_hosts(docker_client, image_id)
    assert ledger_record(result["ledger_id"])["result"] == "failed"
    with pytest.raises(InfraError, match="failed verification at"):
        require_verified(client, image_id)


def test_broken_image_is_reported_as_broken(verify_project, images, docker_client, client):
    broken = images["broken"]
    result = verify_project.run([verify(image=broken["image"], tests=["tests/passing/"])])["verify"]
    assert result["failed"] and result["broken"] is True and result["passed"] is False
    assert "is broken: its command exited with code 3" in result["msg"]
    assert "config /etc/greeting.conf is missing" in result["msg"]
    assert [failure["test"] for failure in result["failures"]] == ["host"]
    assert result["failures"][0]["message"].startswith("the image is broken: its command exited with code 3")
    assert not verify_hosts(docker_client, broken["image_id"])
    record = ledger_record(result["ledger_id"])
    assert record["result"] == "failed" and record["broken"]["exit_code"] == 3
    with pytest.raises(InfraError, match="failed verification"):
        require_verified(client, broken["image_id"])

    # Waiting for a port, verify sees the command exit before any test runs.
    waited = verify_project.run([verify(image=broken["image"], tests=["tests/passing/"], wait_for_ports=[8080])])
    assert "is broken: its command exited with code 3 before the tests started" in waited["verify"]["msg"]
    assert waited["verify"]["tests"]["total"] == 0
    assert not verify_hosts(docker_client, broken["image_id"])


BAD_INPUT = {
    "missing directory": ({"tests": ["tests/no_such_dir/"]}, "Tests path 'tests/no_such_dir/' does not exist"),
    "one path missing": ({"tests": ["tests/passing/", "tests/nope.py"]}, "Tests path 'tests/nope.py' does not exist"),
    "no test files": ({"tests": ["tests/empty"]}, "holds no test files"),
    "nothing at all": ({"tests": []}, "Nothing to verify"),
    "unknown role": ({"idempotence": True, "roles": ["no_such_role"]}, "Role 'no_such_role' was not found"),
    "no scenario": ({"molecule_scenario": "molecule/none"}, "Molecule scenario 'molecule/none' has no molecule.yml"),
}


def test_bad_input_is_an_error_before_any_host_starts(verify_project, images, docker_client):
    image_id = images["good"]["image_id"]
    with creations(docker_client, label=f"immutable.infra.verifying={image_id}") as created:
        run = verify_project.run([dict(verify(image=image_id, **options), name=case)
                                  for case, (options, message) in BAD_INPUT.items()])
    for case, (_options, message) in BAD_INPUT.items():
        result = run[case]
        assert result["failed"] and message in result["msg"], (case, result["msg"])
        assert "passed" not in result
    assert not created


def test_missing_image_is_an_error(verify_project, base_image):
    result = verify_project.run([verify(image="immutable-infra/no-such-image:1", tests=["tests/passing/"])])["verify"]
    assert result["failed"] and "Image 'immutable-infra/no-such-image:1' is not in the Docker engine" in result["msg"]


def test_several_files_run_in_parallel(verify_project, images, docker_client):
    image_id = images["stamped"]["image_id"]
    result = verify_project.run([verify(image=image_id, tests=["tests/parallel/"])])["verify"]
    assert result["passed"] is True, result["msg"]  # each file waits for the other: both ran at once
    assert result["workers"] == 2
    assert sorted(entry["file"].rsplit("/", 1)[-1] for entry in result["files"]) == ["test_a.py", "test_b.py"]
    assert not verify_hosts(docker_client, image_id)


def test_idempotence_reports_a_role_that_changes_something(verify_project, images, docker_client):
    image_id = images["stamped"]["image_id"]
    result = verify_project.run([verify(image=image_id, idempotence=True)])["verify"]
    assert result["failed"] and result["passed"] is False
    assert result["idempotence"]["roles"] == ["greeting", "stamp"]
    assert result["idempotence"]["changed_tasks"] == ["stamp : Append a build stamp"]
    assert "idempotence: stamp : Append a build stamp" in result["msg"]
    assert not verify_hosts(docker_client, image_id)


def test_check_mode_starts_nothing_and_says_what_would_run(verify_project, images, docker_client):
    good = images["good"]
    with creations(docker_client, label=f"immutable.infra.verifying={good['image_id']}") as created:
        result = verify_project.run([verify(image=good["image"], tests=["tests/passing/", "tests/parallel/"],
                                            idempotence=True)], check=True)["verify"]
    assert result["would_verify"] is True and result["passed"] is None
    assert result["changed"] is (result["previous_verdict"] is None)  # a first verdict is a change
    assert [os.path.basename(path) for path in result["test_files"]] == ["test_greeting.py", "test_a.py", "test_b.py"]
    assert result["idempotence_roles"] == ["greeting"] and result["workers"] == 2
    assert not created


def test_timeout_fails_the_verdict_and_removes_the_host(verify_project, images, docker_client):
    begun, image_id = time.monotonic(), images["stamped"]["image_id"]
    result = verify_project.run([verify(image=image_id, tests=["tests/slow/"], verify_timeout=4)])["verify"]
    assert time.monotonic() - begun < 30
    assert result["failed"] and result["passed"] is False
    assert "did not finish within the verify_timeout of 4 s" in result["msg"]
    assert not verify_hosts(docker_client, image_id)


def test_interrupted_verify_removes_its_host(verify_project, images, docker_client):
    image_id = images["stamped"]["image_id"]
    playbook = verify_project.path / "interrupted.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"immutable.infra.verify": {"image": image_id, "tests": ["tests/slow/"]}}]}]))
    process = subprocess.Popen([sys.executable, "-m", "ansible.cli.playbook", str(playbook)], cwd=verify_project.path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(host.exec_run(["test", "-e", "/tmp/slow-started"]).exit_code == 0
                      for host in verify_hosts(docker_client, image_id) if host.status == "running"):
            assert time.monotonic() < deadline and process.poll() is None, "the slow test never started"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 20
    while verify_hosts(docker_client, image_id):
        assert time.monotonic() < deadline, "the throwaway host was left behind"
        time.sleep(0.2)
    leftover = subprocess.run(["pgrep", "-f", f"{verify_project.path}/tests/slow"], stdout=subprocess.PIPE, text=True,
                              check=False).stdout
    assert not leftover, f"pytest was left running: {leftover}"


def test_molecule_scenario_runs_against_the_candidate_image(verify_project, images, docker_client):
    hello = images["hello"]
    with creations(docker_client, container="demo-hello-molecule") as created:
        result = verify_project.run([verify(image=hello["image"],
                                            molecule_scenario=os.path.join(DEMO, "molecule", "hello"))])["verify"]
    assert result["passed"] is True, result["msg"]
    molecule = result["molecule"]
    assert molecule["scenario"] == "hello" and molecule["passed"] is True
    assert molecule["tests"] == {"total": 5, "passed": 5, "failed": 0, "errors": 0, "skipped": 0}
    assert os.path.exists(molecule["log"]) and os.path.exists(molecule["report"])
    assert result["report"] is None and result["tests"]["total"] == 0
    assert [event["Actor"]["Attributes"]["image"] for event in created] == [hello["image_id"]]  # the image, by ID
    assert not docker_client.containers.list(all=True, filters={"name": "demo-hello-molecule"})


def test_failing_molecule_scenario_fails_the_verdict_and_names_its_test(verify_project, images, docker_client):
    instance = f"itest-molecule-{uuid.uuid4().hex[:8]}"
    result = verify_project.run([verify(image=images["good"]["image"], molecule_scenario="molecule/greeting")],
                                env={"MOLECULE_INSTANCE": instance, "MOLECULE_TESTS": "failing"})["verify"]
    assert result["failed"] and result["passed"] is False and result["molecule"]["passed"] is False
    assert result["molecule"]["tests"]["failed"] == 1
    assert "failed verification (Molecule greeting: 1 passed, 1 failed)" in result["msg"]
    assert "  - molecule greeting: " in result["msg"]
    assert "tests/failing/test_failing.py::test_greeting_is_formal: AssertionError: greeting is 'Hello, world'" \
        in result["msg"], result["msg"]
    assert not docker_client.containers.list(all=True, filters={"name": instance})
