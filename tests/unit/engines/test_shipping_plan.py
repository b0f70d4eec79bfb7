from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.shipping import (
    Registry,
    parse_registry,
    plan_shipping,
    ship_tag,
)
from ansible_collections.immutable.infra.plugins.plugin_utils.engines.verdicts import newest

IMAGE = "sha256:" + "ab" * 32
REGISTRY = Registry("127.0.0.1:5000")


def test_nothing_to_ship_when_every_needed_engine_has_it():
    plan = plan_shipping(IMAGE, {"local": True, "a": True, "b": False}, ["a"], REGISTRY)
    assert (plan.method, plan.targets, plan.source) == ("none", [], None)


def test_registry_is_used_when_set_and_the_first_holder_is_the_source():
    plan = plan_shipping(IMAGE, {"local": True, "a": False, "b": True, "c": False}, ["a", "b", "c"], REGISTRY)
    assert (plan.method, plan.source, plan.targets, plan.present) == ("registry", "local", ["a", "c"], ["local", "b"])
    assert "through the registry" in plan.describe()


def test_stream_without_a_registry_or_when_asked():
    assert plan_shipping(IMAGE, {"a": True, "b": False}, ["b"], None).method == "stream"
    assert plan_shipping(IMAGE, {"a": True, "b": False}, ["b"], REGISTRY, "stream").method == "stream"


def test_missing_everywhere_names_the_engines():
    with pytest.raises(InfraError, match=r"is on none of the engines \(local, a, b\)"):
        plan_shipping(IMAGE, {"local": False, "a": False, "b": False}, ["a", "b"], REGISTRY)


def test_registry_method_needs_a_registry_and_methods_are_checked():
    with pytest.raises(InfraError, match="no registry is set"):
        plan_shipping(IMAGE, {"a": True, "b": False}, ["b"], None, "registry")
    with pytest.raises(InfraError, match="not one of auto, registry, stream"):
        plan_shipping(IMAGE, {"a": True, "b": False}, ["b"], None, "scp")
    with pytest.raises(InfraError, match="were not looked at"):
        plan_shipping(IMAGE, {"a": True}, ["b"], None)


def test_push_reference_is_derived_from_the_image_id():
    assert REGISTRY.reference(IMAGE) == ("127.0.0.1:5000/immutable-infra/images", "sha256-" + "ab" * 32)
    assert len(ship_tag(IMAGE)) <= 128
    assert REGISTRY.url == "http://127.0.0.1:5000/v2/"
    assert Registry("registry.example.org:443").url == "https://registry.example.org:443/v2/"


def test_registry_settings_are_validated():
    assert parse_registry(None) is None
    assert parse_registry("127.0.0.1:5000") == REGISTRY
    assert parse_registry({"address": "10.0.0.9:443", "repository": "team/web"}).repository == "team/web"
    with pytest.raises(InfraError, match="must be host:port"):
        parse_registry("http://127.0.0.1:5000")
    with pytest.raises(InfraError, match="lower-case path"):
        parse_registry({"address": "127.0.0.1:5000", "repository": "Team/Web"})


def test_registry_credentials_come_in_pairs_and_stay_out_of_its_repr():
    registry = parse_registry({"address": "127.0.0.1:5000", "username": "ci", "password": "s3cret"})
    assert registry.auth_config == {"username": "ci", "password": "s3cret", "serveraddress": "127.0.0.1:5000"}
    assert "s3cret" not in repr(registry)
    assert REGISTRY.auth_config is None
    with pytest.raises(InfraError, match="has a username but no password; give both"):
        parse_registry({"address": "127.0.0.1:5000", "username": "ci"})
    with pytest.raises(InfraError, match="has a password but no username; give both"):
        parse_registry({"address": "127.0.0.1:5000", "password": "s3cret"})


def test_the_newest_verdict_wins_whichever_engine_holds_it():
    passed = {"immutable.infra.verdict": "passed", "immutable.infra.time": "2026-01-01T00:00:01Z"}
    failed = {"immutable.infra.verdict": "failed", "immutable.infra.time": "2026-01-02T00:00:01Z"}
    assert newest({"a": passed, "b": None, "c": failed}) == ("c", failed)
    assert newest({"a": None, "b": None}) is None
    assert newest({"a": passed, "b": dict(passed)})[0] == "a"
