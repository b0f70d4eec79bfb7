"""Bad input for every module, table-driven, through real ansible-playbook runs.

Each case feeds one module one bad option: a wrong type, an empty or huge value, an unknown key, a
control character, path traversal in a name, or a reference to something that does not exist. Every
case must fail with one sentence (one line, no traceback) that contains the expected words, and the
whole table must leave nothing behind: no container, volume or image of the names and labels its cases
use (other runs may share the engine), no builder on its network, no balancer server, no ledger record.
All cases of the table run as tasks of one play (ignore_errors, registered results), so the table costs
a few ansible-playbook runs, not one per case.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

import pytest
from rollout_support import BACKEND, DEMO_DIR, remove_service, rollout_task, service_name
from support import BASE_IMAGE, RUN_ID, Playbooks, image_name

HUGE = "a" * 5000
SENTENCE_BREAK = re.compile(r"[.!?] [A-Z]")


BUILDER_NETWORK = f"itest-bad-input-{RUN_ID}"  # a builder on it would be one of the table's bakes


def bake(**change):
    return dict({"name": image_name("bad-input"), "base": BASE_IMAGE, "roles": ["hello"], "network": BUILDER_NETWORK},
                **change)


def verify(image, **change):
    return dict({"image": image, "tests": [os.path.join(DEMO_DIR, "tests", "test_hello.py")]}, **change)


def merged(base, change):
    """base with change applied; a dict value updates the dict option instead of replacing it."""
    result = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and not value.pop("_replace", False):
            result[key] = dict(result[key], **value)
        else:
            result[key] = value
    return result


def cases(image, proxy, service, live_service):
    """(case, module, options, words the message must hold)."""
    rollout = rollout_task(service, image, proxy)["immutable.infra.rollout"]
    backend = {"runtime_api": proxy.runtime_api, "backend": "web"}
    table = [
        # bake
        ("bake: unknown option", "bake", bake(colour="red"), "has no option colour"),
        ("bake: unknown config key", "bake", bake(config={"shell": "/bin/sh"}), "has no option config.shell"),
        ("bake: roles of the wrong type", "bake", bake(roles={"hello": 1}), "roles"),
        ("bake: vars of the wrong type", "bake", bake(vars="not a dict"), "dictionary requested"),
        ("bake: empty name", "bake", bake(name=""), "name"),
        ("bake: huge name", "bake", bake(name=HUGE), "at most 4096"),
        ("bake: control character in the name", "bake", bake(name="acme/web\x07"), "control character"),
        ("bake: path traversal in the name", "bake", bake(name="../../etc/web"), "name"),
        ("bake: base that does not exist", "bake", bake(base="immutable-infra/no-such-base:1"),
         "is not in the local Docker engine"),
        ("bake: role that does not exist", "bake", bake(roles=["no_such_role"]), "no_such_role"),
        ("bake: path traversal in a role", "bake", bake(roles=["../../../../etc"]), "is a directory but not a role"),
        ("bake: negative bake_timeout", "bake", bake(bake_timeout=-1), "bake_timeout"),
        ("bake: huge bake_timeout", "bake", bake(bake_timeout=10**12), "bake_timeout"),
        ("bake: zero engine timeout", "bake", bake(timeout=0), "timeout must be a whole number of seconds above 0"),
        ("bake: huge engine timeout", "bake", bake(timeout=10**12), "timeout must be a whole number"),
        ("bake: engine that is not a URL", "bake", bake(docker_host="10.0.0.5:2376"),
         "must start with unix://, tcp:// or ssh://"),
        ("bake: validate_certs without a CA", "bake", bake(docker_host="tcp://127.0.0.1:9", validate_certs=True),
         "validate_certs needs ca_path"),
        ("bake: client_cert without its key", "bake",
         bake(docker_host="tcp://127.0.0.1:9", tls=True, client_cert="/etc/hostname"), "client_cert and client_key go"),
        ("bake: TLS to a socket", "bake",
         bake(docker_host="unix:///var/run/docker.sock", validate_certs=True, ca_path="/etc/hostname"),
         "TLS applies to tcp:// engines only"),
        ("bake: CA file that does not exist", "bake",
         bake(docker_host="tcp://127.0.0.1:9", validate_certs=True, ca_path="/nonexistent/ca.pem"),
         "/nonexistent/ca.pem"),
        ("bake: relative cleanup path", "bake", bake(cleanup_paths=["../tmp"]), "absolute path without '..'"),
        ("bake: project_dir that does not exist", "bake", bake(project_dir="/nonexistent/project"),
         "/nonexistent/project"),
        # verify
        ("verify: unknown option", "verify", verify(image, colour="red"), "has no option colour"),
        ("verify: image that does not exist", "verify", verify("immutable-infra/no-such-image:1"),
         "is not in the Docker engine"),
        ("verify: empty image", "verify", verify(""), "image"),
        ("verify: control character in the image", "verify", verify("sha256:\x01"), "control character"),
        ("verify: tests that do not exist", "verify", verify(image, tests=["tests/nope.py"]), "does not exist"),
        ("verify: path traversal in tests", "verify", verify(image, tests=["../../../../../../../etc/passwd"]),
         "neither a directory nor a Python test file"),
        ("verify: parallel not a choice", "verify", verify(image, parallel="sometimes"), "parallel"),
        ("verify: zero verify_timeout", "verify", verify(image, verify_timeout=0), "verify_timeout"),
        ("verify: huge verify_timeout", "verify", verify(image, verify_timeout=10**12), "verify_timeout"),
        ("verify: port out of range", "verify", verify(image, wait_for_ports=[70000]), "70000"),
        ("verify: port of the wrong type", "verify", verify(image, wait_for_ports=["http"]), "wait_for_ports"),
        # rollout
        ("rollout: unknown option", "rollout", merged(rollout, {"colour": "red"}), "has no option colour"),
        ("rollout: unknown balancer key", "rollout", merged(rollout, {"balancer": {"socket": "x"}}),
         "balancer.socket"),
        ("rollout: unknown health key", "rollout", merged(rollout, {"health": {"path": "/"}}), "health.path"),
        ("rollout: replicas of the wrong type", "rollout", merged(rollout, {"replicas": "many"}), "replicas"),
        ("rollout: zero replicas", "rollout", merged(rollout, {"replicas": 0}), "replicas must be at least 1"),
        ("rollout: huge replicas", "rollout", merged(rollout, {"replicas": 10**9}), "at most 1000"),
        ("rollout: port out of range", "rollout", merged(rollout, {"port": 70000}), "port must be between"),
        ("rollout: empty service", "rollout", merged(rollout, {"service": ""}), "must start with a lower-case"),
        ("rollout: upper-case service", "rollout", merged(rollout, {"service": "Web"}), "must start with a lower-case"),
        ("rollout: huge service", "rollout", merged(rollout, {"service": HUGE}), "at most 4096"),
        ("rollout: control character in the service", "rollout", merged(rollout, {"service": "web\x00api"}),
         "control character"),
        ("rollout: path traversal in the service", "rollout", merged(rollout, {"service": "../../etc"}),
         "must start with a lower-case"),
        ("rollout: image that does not exist", "rollout", merged(rollout, {"image": "immutable-infra/nope:1"}),
         "immutable-infra/nope:1"),
        ("rollout: empty image", "rollout", merged(rollout, {"image": ""}), "image"),
        ("rollout: backend that does not exist", "rollout", merged(rollout, {"balancer": {"backend": "nope"}}),
         "has no backend named nope"),
        ("rollout: runtime API that does not exist", "rollout",
         merged(rollout, {"balancer": {"runtime_api": "/nonexistent/admin.sock"}}), "Cannot reach the HAProxy"),
        ("rollout: path traversal in the runtime API", "rollout",
         merged(rollout, {"balancer": {"runtime_api": "../../etc/passwd"}}), "runtime API address"),
        ("rollout: zero up_timeout", "rollout", merged(rollout, {"balancer": {"up_timeout": 0}}), "up_timeout"),
        ("rollout: zero health interval", "rollout", merged(rollout, {"health": {"interval": 0}}), "interval"),
        ("rollout: huge health timeout", "rollout", merged(rollout, {"health": {"timeout": 10**9}}), "timeout"),
        ("rollout: http_path without a slash", "rollout", merged(rollout, {"health": {"http_path": "healthz"}}),
         "must start with '/'"),
        ("rollout: negative drain_timeout", "rollout", merged(rollout, {"drain_timeout": -1}), "drain_timeout"),
        ("rollout: huge stop_timeout", "rollout", merged(rollout, {"stop_timeout": 10**9}), "stop_timeout"),
        ("rollout: huge lock_timeout", "rollout", merged(rollout, {"lock_timeout": 10**12}), "lock_timeout"),
        ("rollout: negative keep_previous", "rollout", merged(rollout, {"keep_previous": -1}), "keep_previous"),
        ("rollout: huge canary seconds", "rollout", merged(rollout, {"strategy": "canary",
                                                                     "canary": {"seconds": 10**9}}), "canary"),
        ("rollout: strategy not a choice", "rollout", merged(rollout, {"strategy": "big_bang"}), "strategy"),
        ("rollout: zero batch_size", "rollout", merged(rollout, {"batch_size": 0}), "batch_size"),
        ("rollout: network that does not exist", "rollout",
         merged(rollout, {"container": {"networks": ["no-such-network-4f2a"]}}), "no-such-network-4f2a"),
        ("rollout: memory that is no size", "rollout", merged(rollout, {"container": {"memory": "lots"}}),
         "container.memory"),
        ("rollout: restart policy not a choice", "rollout",
         merged(rollout, {"container": {"restart_policy": "sometimes"}}), "restart_policy"),
        ("rollout: env of the wrong type", "rollout", merged(rollout, {"container": {"env": ["A=1"]}}), "env"),
        # rollback
        ("rollback: unknown option", "rollback", {"service": live_service, "colour": "red"}, "has no option colour"),
        ("rollback: service with no rollout", "rollback", {"service": service}, "has no rollout of this service"),
        ("rollback: revision that does not exist", "rollback", {"service": live_service, "revision": 99},
         "Revision 99 does not exist"),
        ("rollback: revision of the wrong type", "rollback", {"service": live_service, "revision": "latest"},
         "revision"),
        ("rollback: control character in the service", "rollback", {"service": "web\napi"}, "control character"),
        ("rollback: path traversal in the service", "rollback", {"service": "../web"}, "must start with a lower-case"),
        ("rollback: nothing to roll back to", "rollback", {"service": live_service, "balancer": backend},
         "No successful revision with another image"),
        # drift
        ("drift: unknown option", "drift", {"service": live_service, "colour": "red"}, "has no option colour"),
        ("drift: bad service", "drift", {"service": "Web Api"}, "must start with a lower-case"),
        ("drift: relative writable path", "drift", {"service": live_service, "writable_paths": ["srv/uploads"]},
         "must be an absolute path"),
        ("drift: path traversal in a writable path", "drift",
         {"service": live_service, "writable_paths": ["/tmp/../etc"]}, "'..'"),
        ("drift: heal behind a backend that does not exist", "drift",
         {"service": live_service, "heal": True, "balancer": dict(backend, backend="nope")},
         "has no backend named nope"),
        ("drift: drain_timeout of the wrong type", "drift", {"service": live_service, "drain_timeout": "long"},
         "drain_timeout"),
        # history
        ("history: unknown option", "history", {"service": live_service, "colour": "red"}, "has no option colour"),
        ("history: bad service", "history", {"service": "-web"}, "must start with a lower-case"),
        ("history: negative limit", "history", {"service": live_service, "limit": -1}, "limit"),
        ("history: limit of the wrong type", "history", {"service": live_service, "limit": "all"}, "limit"),
        ("history: huge service", "history", {"service": HUGE}, "at most 4096"),
        # prune
        ("prune: unknown option", "prune", {"colour": "red"}, "has no option colour"),
        ("prune: negative keep_previous", "prune", {"keep_previous": -1}, "keep_previous"),
        ("prune: negative keep_images", "prune", {"keep_images": -1}, "keep_images"),
        ("prune: negative min_age", "prune", {"min_age": -1}, "min_age"),
        ("prune: bad service", "prune", {"service": "web/../../x"}, "must start with a lower-case"),
        ("prune: control character in a pinned image", "prune", {"pinned": ["acme/web:1\x1b[31m"]},
         "control character"),
    ]
    return table


def snapshot(docker_client, proxy, ledger, image, services):
    """What the table's cases could leave behind: containers of its services, its image and its builders'
    network, their volumes, images of its names, balancer servers and ledger records."""
    with open(ledger, encoding="utf-8") if os.path.exists(ledger) else open(os.devnull, encoding="utf-8") as handle:
        records = handle.read().count("\n")
    api = docker_client.api
    filters = [{"network": BUILDER_NETWORK}, {"label": f"immutable.infra.verifying={image}"}]
    for service in services:
        filters += [{"label": f"immutable.infra.service={service}"}, {"name": f"immutable-infra-lock-{service}"}]
    volumes = [volume["Name"] for service in services
               for volume in api.volumes(filters={"name": service})["Volumes"] or []]
    containers = [container["Id"] for where in filters for container in api.containers(all=True, filters=where)]
    return {"containers": sorted(containers),
            "volumes": sorted(volumes),
            "images": sorted(found["Id"] for found in api.images(filters={"reference": image_name("bad-input")})),
            # name, address, operational and admin state, port (not the seconds since the last change)
            "servers": [tuple(line.split()[index] for index in (3, 4, 5, 6, 18))
                        for line in proxy.command("show servers state web").splitlines()[2:] if line.strip()],
            "ledger records": records}


@pytest.fixture
def setup(docker_client, shared_hello, start_haproxy):
    image = shared_hello({"1.0": {}})["1.0"]
    proxy = start_haproxy(BACKEND)
    project_dir = tempfile.mkdtemp(prefix="bad-input-")
    os.symlink(os.path.join(DEMO_DIR, "roles"), os.path.join(project_dir, "roles"))
    ledger = os.path.join(project_dir, "ledger.jsonl")
    project = Playbooks(project_dir)
    live_service, service = service_name(), service_name()
    docker_client.api.create_network(BUILDER_NETWORK, driver="bridge")
    live = project.run([rollout_task(live_service, image, proxy, replicas=1)], env={"IMMUTABLE_INFRA_LEDGER": ledger})
    assert live["rollout"]["changed"], live["rollout"].get("msg")
    yield project, image, proxy, ledger, service, live_service
    for name in (service, live_service):
        remove_service(docker_client, name)
    docker_client.api.remove_network(BUILDER_NETWORK)


def test_every_module_refuses_bad_input_in_one_sentence_and_leaves_nothing_behind(docker_client, setup):
    project, image, proxy, ledger, service, live_service = setup
    table = cases(image, proxy, service, live_service)
    before = snapshot(docker_client, proxy, ledger, image, (service, live_service))
    run = project.run([{"name": case, f"immutable.infra.{module}": options} for case, module, options, _words in table],
                      env={"IMMUTABLE_INFRA_LEDGER": ledger})
    after = snapshot(docker_client, proxy, ledger, image, (service, live_service))
    problems = []
    for case, _module, _options, words in table:
        result = run.results.get(case)
        if result is None:
            problems.append(f"{case}: no result")
            continue
        message = str(result.get("msg", ""))
        if not result.get("failed"):
            problems.append(f"{case}: did not fail ({message[:200]})")
        elif words not in message:
            problems.append(f"{case}: message lacks {words!r}: {message[:300]}")
        elif "\n" in message or "Traceback" in json.dumps(result) or SENTENCE_BREAK.search(message):
            problems.append(f"{case}: not one sentence: {message[:300]}")
        elif len(message) > 600:
            problems.append(f"{case}: message of {len(message)} characters")
    assert not problems, "\n".join(problems)
    assert "Traceback" not in run.output
    assert after == before
