"""What verify checks before it starts anything, and the pieces that keep it from leaving things behind."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.core.interrupts import Interrupted, interruptible
from ansible_collections.immutable.infra.plugins.plugin_utils.core.processes import run_streaming
from ansible_collections.immutable.infra.plugins.plugin_utils.task.contract import TaskContext
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.manager import Verifier
from ansible_collections.immutable.infra.plugins.plugin_utils.verify.runners import find_test_files, locate_scenario


def touch(path, content=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


@pytest.fixture
def project(tmp_path):
    touch(tmp_path / "tests/image/test_web.py")
    touch(tmp_path / "tests/image/tls_test.py")
    touch(tmp_path / "tests/image/conftest.py")
    touch(tmp_path / "tests/image/helpers.py")
    touch(tmp_path / "tests/image/sub/test_deep.py")
    touch(tmp_path / "tests/image/__pycache__/test_web.cpython-311.py")
    touch(tmp_path / "tests/docs/README.md")
    touch(tmp_path / "checks.py")
    touch(tmp_path / "molecule/web/molecule.yml")
    touch(tmp_path / "extensions/molecule/api/molecule.yml")
    touch(tmp_path / "scenarios/odd/molecule.yml")
    return tmp_path


def test_test_files_are_found_like_pytest_finds_them(project):
    paths, files = find_test_files(["tests/image/", "checks.py", "tests/image/test_web.py"], str(project))
    assert paths == [str(project / "tests/image"), str(project / "checks.py"), str(project / "tests/image/test_web.py")]
    assert [os.path.relpath(path, project) for path in files] == [
        "tests/image/sub/test_deep.py", "tests/image/test_web.py", "tests/image/tls_test.py", "checks.py"]


@pytest.mark.parametrize("given, message", [
    (["tests/missing/"], "Tests path 'tests/missing/' does not exist"),
    (["tests/docs"], "Tests path 'tests/docs' holds no test files"),
])
def test_bad_tests_paths_are_errors(project, given, message):
    with pytest.raises(InfraError, match=message):
        find_test_files(given, str(project))


def test_scenarios_are_located_where_molecule_finds_them(project):
    web = locate_scenario("molecule/web", str(project))
    assert (web.name, web.project_dir, web.glob) == ("web", str(project), "molecule/*/molecule.yml")
    api = locate_scenario(str(project / "extensions/molecule/api"), "/elsewhere")
    assert (api.name, api.project_dir, api.glob) == ("api", str(project), "extensions/molecule/*/molecule.yml")
    with pytest.raises(InfraError, match="has no molecule.yml"):
        locate_scenario("molecule/none", str(project))
    with pytest.raises(InfraError, match="must be a directory molecule/<name>"):
        locate_scenario("scenarios/odd", str(project))


def params(**options):
    base = {"image": "x", "disk": None, "tests": ["t.py"], "molecule_scenario": None, "idempotence": False,
            "verify_timeout": 300, "start_timeout": 30, "boot_timeout": 300, "memory": 1024, "roles": None,
            "keep_alive": False, "network": None}
    return dict(base, **options)


@pytest.mark.parametrize("options, message", [
    ({"tests": []}, "Nothing to verify"),
    ({"verify_timeout": 0}, "verify_timeout must be a positive number"),
    ({"start_timeout": -1}, "start_timeout must be a positive number"),
    ({"disk": "d.qcow2"}, "Give either image or disk to verify, not both"),
    ({"image": None}, r"Give the image to verify \(image\), or a disk"),
    ({"image": None, "disk": "d.qcow2", "tests": []}, "give tests to run against the booted disk"),
    ({"image": None, "disk": "d.qcow2", "idempotence": True}, "idempotence applies to images, not to disks"),
    ({"image": None, "disk": "d.qcow2", "molecule_scenario": "molecule/web"}, "molecule_scenario applies to images"),
    ({"image": None, "disk": "d.qcow2", "boot_timeout": 0}, "boot_timeout must be a positive number"),
    ({"image": None, "disk": "d.qcow2", "memory": -5}, "memory must be a positive number"),
    ({"accel": "tcg"}, "accel applies to disks .*, not to images"),
    ({"memory": 4096}, "memory applies to disks .*, not to images"),
    ({"boot_timeout": 60}, "boot_timeout applies to disks .*, not to images"),
])
def test_options_are_checked_first(options, message):
    with pytest.raises(InfraError, match=message):
        Verifier(params(**options), TaskContext(basedir="/tmp"))


def test_a_signal_interrupts_once_and_waits_for_shielded_cleanup():
    cleaned = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under a shell's `&`, Python's handler otherwise
    with pytest.raises(Interrupted, match="verify of x was interrupted by SIGINT"):
        with interruptible("verify of x") as guard:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            finally:
                with guard.shield():
                    os.kill(os.getpid(), signal.SIGTERM)  # ignored: the first signal is being handled
                    cleaned.append("host removed")
    assert cleaned == ["host removed"]
    assert signal.getsignal(signal.SIGINT) is before


def test_a_signal_during_shielded_cleanup_is_raised_after_it():
    steps = []
    with pytest.raises(Interrupted, match="SIGTERM"):
        with interruptible("verify") as guard:
            with guard.shield():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("cleanup finished")
            steps.append("not reached")
    assert steps == ["cleanup finished"]


def test_a_deferred_guard_raises_where_the_work_checks_in_every_thread():
    raised = []

    def worker():
        try:
            guard.check()
        except Interrupted as error:
            raised.append(error.message)

    with interruptible("rollout of web", deferred=True) as guard:
        guard.check()  # no signal yet
        os.kill(os.getpid(), signal.SIGTERM)  # marks the guard, raises nothing here
        os.kill(os.getpid(), signal.SIGINT)  # ignored: the first signal counts
        threads = [threading.Thread(target=worker) for number in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with pytest.raises(Interrupted):
            guard.check()
    assert raised == ["rollout of web was interrupted by SIGTERM."] * 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_command_past_its_deadline_is_killed_with_its_children(tmp_path):
    marker = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(marker)!r}, 'w').write(str(child.pid)); print('started', flush=True); "
              "time.sleep(60)")
    lines = []
    begun = time.monotonic()
    finished = run_streaming([sys.executable, "-c", script], str(tmp_path), dict(os.environ), 5, lines.append)
    assert time.monotonic() - begun < 50, "the command ran its 60 s instead of being killed at its deadline"
    assert finished.timed_out and lines == ["started"]
    child = int(marker.read_text())
    deadline = time.monotonic() + 30
    while child_alive(child):
        assert time.monotonic() < deadline, "the child outlived its parent's deadline"
        time.sleep(0.05)


def child_alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_command_that_cannot_start_is_reported(tmp_path):
    finished = run_streaming(["/nonexistent/tool"], str(tmp_path), {}, 5)
    assert finished.returncode == 127 and "could not start /nonexistent/tool" in finished.tail


def test_a_signal_handled_by_another_thread_still_stops_a_quiet_command(tmp_path):
    # The kernel may hand a signal to any thread; its Python handler runs when the main thread next runs.
    helper_ready, stop_helper = threading.Event(), threading.Event()

    def helper():
        helper_ready.set()
        stop_helper.wait(10)

    thread = threading.Thread(target=helper)
    thread.start()
    helper_ready.wait()
    begun = time.monotonic()
    sender = threading.Timer(0.5, lambda: signal.pthread_kill(thread.ident, signal.SIGINT))
    try:
        with pytest.raises(Interrupted):
            with interruptible("verify"):
                sender.start()
                run_streaming([sys.executable, "-c", "import time; time.sleep(30)"], str(tmp_path), dict(os.environ), 60)
    finally:
        stop_helper.set()
        thread.join()
    assert time.monotonic() - begun < 25, "the command ran its 30 s instead of being stopped by the signal"
