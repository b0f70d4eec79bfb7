from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import plan as bake_plan
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError


def inputs(**overrides):
    base = dict(base_image_id="sha256:" + "a" * 64, roles=[{"name": "nginx", "digest": "1" * 64}],
                variables={"app_version": "1.4", "ports": [80, 443]}, config={"cmd": ["serve"]},
                versions={"ansible-core": "2.19.14", "immutable.infra": "0.1.0"}, builder={"gather_subset": ["min"]})
    base.update(overrides)
    return bake_plan.build_inputs(**base)


@pytest.mark.parametrize("name", ["acme/web", "web", "registry.example.com:5000/acme/web", "a/b-c_d.e/f__g",
                                  "localhost/x"])
def test_valid_repository_names(name):
    assert bake_plan.validate_repository(name) == name


@pytest.mark.parametrize("name, hint", [
    ("acme/web:1.0", "without a tag"),
    ("acme/web@sha256:" + "0" * 64, "without a tag"),
    ("Acme/Web", "lower case"),
    ("", "valid image repository"),
    ("acme//web", "valid image repository"),
    ("-web", "valid image repository"),
])
def test_invalid_repository_names_say_what_to_do(name, hint):
    with pytest.raises(InfraError) as error:
        bake_plan.validate_repository(name)
    assert hint in error.value.message


def test_hash_ignores_dict_order():
    first = inputs(variables={"a": 1, "b": {"x": 1, "y": 2}})
    second = inputs(variables={"b": {"y": 2, "x": 1}, "a": 1})
    assert bake_plan.inputs_hash(first) == bake_plan.inputs_hash(second)


@pytest.mark.parametrize("change", [
    {"base_image_id": "sha256:" + "b" * 64},
    {"roles": [{"name": "nginx", "digest": "2" * 64}]},
    {"roles": [{"name": "nginx", "digest": "1" * 64}, {"name": "app", "digest": "3" * 64}]},
    {"variables": {"app_version": "1.5", "ports": [80, 443]}},
    {"variables": {"app_version": "1.4", "ports": [443, 80]}},
    {"config": {"cmd": ["serve", "--fast"]}},
    {"versions": {"ansible-core": "2.19.15", "immutable.infra": "0.1.0"}},
    {"builder": {"gather_subset": ["all"]}},
])
def test_hash_changes_with_every_input(change):
    assert bake_plan.inputs_hash(inputs()) != bake_plan.inputs_hash(inputs(**change))


def test_role_order_matters():
    roles = [{"name": "a", "digest": "1" * 64}, {"name": "b", "digest": "2" * 64}]
    assert bake_plan.inputs_hash(inputs(roles=roles)) != bake_plan.inputs_hash(inputs(roles=roles[::-1]))


def test_explain_differences_names_each_changed_input():
    old = bake_plan.inputs_summary(inputs())
    new = bake_plan.inputs_summary(inputs(
        base_image_id="sha256:" + "c" * 64,
        roles=[{"name": "nginx", "digest": "9" * 64}, {"name": "app", "digest": "3" * 64}],
        variables={"app_version": "2"},
        versions={"ansible-core": "2.19.15", "immutable.infra": "0.1.0"}))
    reasons = bake_plan.explain_differences(new, old)
    assert any(reason.startswith("base image changed") for reason in reasons)
    assert "role nginx files changed" in reasons
    assert "role app added" in reasons
    assert "vars changed" in reasons
    assert "ansible-core version changed (2.19.14 -> 2.19.15)" in reasons
    assert "config changed" not in reasons


def test_explain_differences_reports_removed_roles_and_order():
    two = [{"name": "a", "digest": "1" * 64}, {"name": "b", "digest": "2" * 64}]
    old = bake_plan.inputs_summary(inputs(roles=two))
    assert bake_plan.explain_differences(bake_plan.inputs_summary(inputs(roles=two[:1])), old) == ["role b removed"]
    assert bake_plan.explain_differences(bake_plan.inputs_summary(inputs(roles=two[::-1])), old) == ["role order changed"]


def test_explain_differences_without_recorded_inputs():
    assert bake_plan.explain_differences(bake_plan.inputs_summary(inputs()), None) == [
        "the newest image of this name records no inputs"]


def test_summary_keeps_no_variable_values():
    summary = bake_plan.inputs_summary(inputs(variables={"db_password": "hunter2"}))
    assert "hunter2" not in json.dumps(summary)


def test_normalize_config_drops_unset_and_canonicalises_ports():
    config = bake_plan.normalize_config({"cmd": None, "exposed_ports": ["8000", "53/udp", "8000/tcp"],
                                         "env": {"A": 1}, "workdir": None})
    assert config == {"exposed_ports": ["53/udp", "8000/tcp"], "env": {"A": "1"}}


@pytest.mark.parametrize("port", ["http", "0", "70000", "80/xyz"])
def test_normalize_config_rejects_bad_ports(port):
    with pytest.raises(InfraError, match="exposed_ports"):
        bake_plan.normalize_config({"exposed_ports": [port]})


BASE_CONFIG = {"Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["bash"], "Env": ["PATH=/usr/bin", "LANG=C"],
               "ExposedPorts": {"22/tcp": {}}, "WorkingDir": "/", "User": "", "Labels": {"vendor": "x"}}


def test_commit_config_inherits_from_base_when_not_given():
    config = bake_plan.commit_config(BASE_CONFIG, {}, {"immutable.infra.inputs_hash": "h"})
    assert config["Entrypoint"] == ["/docker-entrypoint.sh"]
    assert config["Cmd"] == ["bash"]
    assert config["Env"] == ["PATH=/usr/bin", "LANG=C"]
    assert config["Labels"] == {"vendor": "x", "immutable.infra.inputs_hash": "h"}


def test_a_bake_on_a_baked_base_blanks_the_base_s_provenance_it_does_not_write_itself():
    base = dict(BASE_CONFIG, Labels={"vendor": "x", "org.opencontainers.image.revision": "base-commit",
                                     "org.opencontainers.image.source": "https://git.example.com/base.git",
                                     "immutable.infra.git_dirty": "false", "immutable.infra.inputs_hash": "base-hash"})
    config = bake_plan.commit_config(base, {}, {"immutable.infra.inputs_hash": "h"})  # baked outside git
    assert config["Labels"] == {"vendor": "x", "org.opencontainers.image.revision": "",
                                "org.opencontainers.image.source": "", "immutable.infra.git_dirty": "",
                                "immutable.infra.inputs_hash": "h"}


def test_commit_config_applies_user_config():
    user = {"cmd": ["serve"], "entrypoint": [], "env": {"LANG": "C.UTF-8", "APP_ENV": "prod"},
            "exposed_ports": ["8000/tcp"], "workdir": "/srv", "user": "app", "labels": {"team": "web"}}
    config = bake_plan.commit_config(BASE_CONFIG, user, {"team": "provenance wins"})
    assert config["Entrypoint"] == [] and config["Cmd"] == ["serve"]
    assert config["Env"] == ["PATH=/usr/bin", "LANG=C.UTF-8", "APP_ENV=prod"]
    assert config["ExposedPorts"] == {"22/tcp": {}, "8000/tcp": {}}
    assert (config["WorkingDir"], config["User"]) == ("/srv", "app")
    assert config["Labels"]["team"] == "provenance wins"


def test_new_entrypoint_resets_inherited_cmd():
    config = bake_plan.commit_config(BASE_CONFIG, {"entrypoint": ["/serve"]}, {})
    assert config["Entrypoint"] == ["/serve"] and config["Cmd"] == []


def test_provenance_labels():
    data = inputs()
    labels = bake_plan.provenance_labels(
        name="acme/web", base="debian:bookworm", inputs=data, digest="d" * 64, roles=["nginx", "acme.web.app@1.2.0"],
        created="2026-01-01T00:00:00Z", git={"commit": "abc", "remote": "git@example.com:acme/ops.git", "dirty": True},
        baked_by="ops@ci")
    assert labels["org.opencontainers.image.revision"] == "abc"
    assert labels["org.opencontainers.image.source"] == "git@example.com:acme/ops.git"
    assert labels["immutable.infra.git_dirty"] == "true"
    assert labels["immutable.infra.roles"] == "nginx,acme.web.app@1.2.0"
    assert labels["immutable.infra.ansible_core"] == "2.19.14"
    assert labels["immutable.infra.collections"] == "immutable.infra=0.1.0"
    assert bake_plan.recorded_inputs({"Config": {"Labels": labels}}) == bake_plan.inputs_summary(data)


def test_provenance_outside_git_has_no_revision():
    labels = bake_plan.provenance_labels(name="w", base="b", inputs=inputs(), digest="d", roles=[], created="t",
                                         git={}, baked_by="u@h")
    assert "org.opencontainers.image.revision" not in labels
    assert "org.opencontainers.image.source" not in labels


def test_recorded_inputs_of_foreign_images():
    assert bake_plan.recorded_inputs({"Config": {"Labels": None}}) is None
    assert bake_plan.recorded_inputs({"Config": {"Labels": {"immutable.infra.inputs": "{broken"}}}) is None
