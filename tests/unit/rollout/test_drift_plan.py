from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.plugin_utils.engines.docker_drift import (
    DEFAULT_WRITABLE_PATHS,
    config_differences,
    filesystem_changes,
    host_drift,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.drift_plan import (
    plan_replacement,
    plan_stray_removals,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.service import plan as rp
from ansible_collections.immutable.infra.plugins.plugin_utils.service.spec import HostSpec

SPEC = HostSpec("web", "sha256:aaa", 8000, {"env": {"APP_ENV": "prod"}}, {"http_path": "/healthz"})
IMAGE = {"Config": {"Env": ["PATH=/usr/bin"], "Cmd": ["serve"], "Entrypoint": None, "User": "app"}}


def container(**changes):
    labels = SPEC.labels(3, 1, "r1")
    base = {"Name": "/web-3-1", "Image": "sha256:aaa",
            "Config": {"Labels": labels, "Env": ["PATH=/usr/bin", "APP_ENV=prod"], "Cmd": ["serve"], "User": "app"},
            "HostConfig": {"PortBindings": {}}, "Mounts": []}
    for key, value in changes.items():
        base[key] = value
    return base


def test_filesystem_changes_skip_writable_paths_and_parent_directories():
    changes = [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/hotfix", "Kind": 1}, {"Path": "/tmp/x", "Kind": 1},
               {"Path": "/srv/data/upload", "Kind": 1}, {"Path": "/usr/bin/tool", "Kind": 2},
               {"Path": "/etc/passwd", "Kind": 0}]
    assert filesystem_changes(changes, DEFAULT_WRITABLE_PATHS + ["/srv/data"]) == [
        "added /etc/hotfix", "deleted /usr/bin/tool", "modified /etc/passwd"]


def test_an_unchanged_host_has_no_drift():
    assert host_drift(container(), IMAGE, [], [], {"r1": ["web-3-1"]}) == []


def test_config_differences_name_env_command_ports_and_mounts():
    changed = container(Config=dict(container()["Config"], Env=["PATH=/usr/bin", "APP_ENV=dev", "DEBUG=1"],
                                    Cmd=["serve", "--debug"]),
                        HostConfig={"PortBindings": {"8000/tcp": [{"HostPort": "8080"}]}},
                        Mounts=[{"Destination": "/data"}])
    assert config_differences(changed, IMAGE, SPEC) == [
        "env APP_ENV changed", "env DEBUG added", "command changed from ['serve'] to ['serve', '--debug']",
        "publishes ports 8000/tcp on the Docker host", "mounts /data"]


def test_the_volume_an_image_declares_is_no_drift_but_another_mount_there_or_elsewhere_is():
    image = {"Config": dict(IMAGE["Config"], Volumes={"/var/lib/app": {}})}
    own = {"Type": "volume", "Name": "3f1c" * 16, "Destination": "/var/lib/app"}
    assert config_differences(container(Mounts=[own]), image, SPEC) == []
    bound = {"Type": "bind", "Source": "/srv/app", "Destination": "/var/lib/app"}
    extra = {"Type": "volume", "Name": "cache", "Destination": "/cache"}
    assert config_differences(container(Mounts=[bound, extra]), image, SPEC) == ["mounts /cache, /var/lib/app"]


def test_other_image_unrecorded_rollout_and_missing_labels():
    assert host_drift(container(Image="sha256:bbb"), IMAGE, [], [], None) == [
        "runs image bbb, rolled out aaa"]
    assert host_drift(container(), IMAGE, [], [], {"r0": ["web-3-1"]}) == [
        "not started by any recorded rollout (rollout r1)"]
    bare = {"Name": "/intruder", "Config": {"Labels": {"immutable.infra.service": "web"}}}
    assert host_drift(bare, IMAGE, [], [], None)[0].startswith("carries the service's label")


def test_spec_round_trips_through_labels():
    labels = SPEC.labels(2, 5, "r9")
    assert HostSpec.from_labels(labels) == SPEC
    assert json.loads(labels["immutable.infra.spec"])["port"] == 8000
    assert HostSpec.from_labels({"immutable.infra.spec": "{broken"}) is None


def test_replacements_go_one_host_at_a_time_new_before_old():
    assert [step.describe() for step in plan_replacement("web-3-1", "web-3-4", 1)] == [
        "batch 1: start web-3-4", "batch 1: wait_healthy web-3-4", "batch 1: add web-3-4",
        "batch 1: drain web-3-1", "batch 1: wait_drained web-3-1", "batch 1: detach web-3-1",
        "batch 1: remove web-3-1"]
    assert plan_stray_removals([("intruder", False)]) == [rp.Step(rp.REMOVE, ("intruder",))]
    assert [step.action for step in plan_stray_removals([("web-9-9", True)])] == [
        rp.DRAIN, rp.WAIT_DRAINED, rp.DETACH, rp.REMOVE]


def test_the_port_a_published_rollout_binds_is_not_drift_but_any_other_binding_is():
    rollout_made = container(HostConfig={"PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}})
    assert config_differences(rollout_made, IMAGE, SPEC) == []
    fixed = container(HostConfig={"PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8000"}]}})
    other = container(HostConfig={"PortBindings": {"8000/tcp": [{"HostPort": ""}], "22/tcp": [{"HostPort": ""}]}})
    assert config_differences(fixed, IMAGE, SPEC) == ["publishes ports 8000/tcp on the Docker host"]
    assert config_differences(other, IMAGE, SPEC) == ["publishes ports 22/tcp on the Docker host"]
