"""The hosts the rollout role made run the verified image's service, one generation, all live."""

import testinfra

SERVICE = "molecule_rollout"
HOSTS = [f"{SERVICE}-1-1", f"{SERVICE}-1-2"]
HEALTHZ = ("import urllib.request; "
           "print(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5).read().decode(), end='')")


def service_host(name):
    return testinfra.get_host(f"docker://root@{name}")


def test_each_host_runs_the_service_as_its_user():
    for name in HOSTS:
        remote = service_host(name)
        assert "hello-server" in remote.file("/proc/1/cmdline").content_string
        assert remote.check_output("stat -c %U /proc/1") == "hello"


def test_each_host_answers_its_health_check():
    for name in HOSTS:
        assert service_host(name).check_output("python3 -c %s", HEALTHZ) == "ok"
