"""The builder's facts cache and how a play uses cached facts (no processes run here)."""

from __future__ import annotations

from ansible.plugins.loader import cache_loader

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import facts_cache
from ansible_collections.immutable.infra.plugins.plugin_utils.bake.play_runner import (
    PlaySpec,
    play_document,
    play_environment,
    write_fact_cache,
)

SETTINGS = {"base_image_id": "sha256:aa", "engine_id": "E1", "privileged": False, "network": None,
            "python_interpreter": "/usr/bin/python3", "ansible_core": "2.19.14", "gather_subset": ["all"]}


def spec(**changes):
    return PlaySpec(container_id="c1", host_name="builder", roles=["web"], variables={}, roles_path=[],
                    collections_path=[], **changes)


def test_the_key_changes_with_every_setting_that_can_change_a_fact():
    key = facts_cache.cache_key(SETTINGS)
    assert facts_cache.cache_key(dict(SETTINGS)) == key
    for name, other in (("base_image_id", "sha256:bb"), ("engine_id", "E2"), ("privileged", True),
                        ("network", "backend"), ("python_interpreter", "/usr/bin/python3.11"),
                        ("ansible_core", "2.20.0")):
        assert facts_cache.cache_key(dict(SETTINGS, **{name: other})) != key, name


def test_only_ansibles_default_subset_is_cached():
    assert facts_cache.applies(["all"])
    assert not facts_cache.applies(["min"]) and not facts_cache.applies(["all", "!hardware"])


def test_facts_are_saved_and_loaded_and_the_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv(facts_cache.CACHE_ENV, str(tmp_path / "cache"))
    assert facts_cache.load("k1") is None
    facts_cache.save("k1", {"ansible_processor_count": 2})
    assert facts_cache.load("k1") == {"ansible_processor_count": 2}
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["k1.json"]
    (tmp_path / "cache" / "k1.json").write_text("{not json")
    assert facts_cache.load("k1") is None  # a damaged entry is gathered again
    monkeypatch.setenv(facts_cache.CACHE_ENV, "off")
    facts_cache.save("k2", {"ansible_processor_count": 2})
    assert facts_cache.load("k2") is None and not (tmp_path / "cache" / "k2.json").exists()


def test_the_default_place_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(facts_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert facts_cache.directory() == str(tmp_path / "immutable-infra" / "facts")


def test_a_play_with_cached_facts_gathers_only_the_live_subset_on_top_of_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_CACHE_PLUGIN", "redis")  # the caller's own fact cache is never used
    cold, warm = spec(capture_facts=True), spec(cached_facts={"ansible_processor_count": 2})
    assert play_document(cold)[0]["gather_subset"] == ["all"] and play_document(warm)[0]["gather_subset"] == ["min"]
    cold_env, warm_env = play_environment(cold, str(tmp_path)), play_environment(warm, str(tmp_path))
    assert cold_env["ANSIBLE_CACHE_PLUGIN"] == "memory" and cold_env["IMMUTABLE_INFRA_EMIT_FACTS"] == "1"
    assert warm_env["ANSIBLE_CACHE_PLUGIN"] == "jsonfile" and warm_env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(tmp_path)
    assert warm_env["ANSIBLE_CACHE_PLUGIN_TIMEOUT"] == "0" and warm_env["IMMUTABLE_INFRA_EMIT_FACTS"] == "0"


def test_cached_facts_are_written_in_the_format_of_ansibles_jsonfile_fact_cache(tmp_path):
    write_fact_cache(str(tmp_path), "builder", {"ansible_processor_count": 2, "ansible_virtualization_type": "docker"})
    reader = cache_loader.get("jsonfile", _uri=str(tmp_path), _prefix="", _timeout=0)
    assert reader.get("builder") == {"ansible_processor_count": 2, "ansible_virtualization_type": "docker"}
