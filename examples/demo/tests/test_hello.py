"""What every host started from the hello image must be: checked from inside the host with testinfra.

The image is minimal (no ps, ss or curl), so the checks read /proc and use the image's own python3.
"""

import json

PORT = 8000
GET = ("import sys, urllib.error, urllib.request\n"
       "try:\n"
       "    reply = urllib.request.urlopen('http://127.0.0.1:%d' + sys.argv[1], timeout=5)\n"
       "except urllib.error.HTTPError as error:\n"
       "    reply = error\n"
       "print(reply.status, reply.read().decode(), end='')\n") % PORT


def get(host, path):
    """(status, body) of an HTTP GET to the service, made from inside the host."""
    reply = host.run("python3 -c %s %s", GET, path)
    assert reply.rc == 0, reply.stderr
    status, body = reply.stdout.split(" ", 1)
    return int(status), body


def server_pid(host):
    """The hello server's process: PID 1 in a container host, a systemd service on a VM."""
    pids = host.check_output("grep -l -a /usr/local/bin/hello-server /proc/[0-9]*/cmdline || true").split()
    assert pids, "the hello server is not running"
    return pids[0].split("/")[2]


def test_service_runs_as_its_own_user(host):
    assert host.check_output("stat -c %%U /proc/%s", server_pid(host)) == "hello"
    user = host.user("hello")
    assert user.exists and user.uid < 1000, "hello must be a system user"
    assert user.shell == "/usr/sbin/nologin"


def test_answers_healthz(host):
    assert get(host, "/healthz") == (200, "ok\n")


def test_says_hello_with_its_version(host):
    config = json.loads(host.file("/etc/hello/hello.json").content_string)
    status, body = get(host, "/")
    assert status == 200
    assert body.endswith(f"version {config['version']}\n"), body


def test_config_file(host):
    config_file = host.file("/etc/hello/hello.json")
    assert config_file.user == "root" and config_file.mode == 0o644
    config = json.loads(config_file.content_string)
    assert config["port"] == PORT and config["healthy"] is True


def test_unit_is_installed_and_enabled(host):
    assert host.file("/etc/systemd/system/hello.service").contains("User=hello")
    assert host.file("/etc/systemd/system/multi-user.target.wants/hello.service").is_symlink
