from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils.core.labels import builder_name
from ansible_collections.immutable.infra.plugins.plugin_utils.trace.prune_plan import (
    PruneOptions,
    observation_from_disk_usage,
    plan_fleet_prune,
    plan_prune,
    service_repositories,
)

NOW = 1_800_000_000.0
HOUR = 3600


def image_id(letter):
    return "sha256:" + letter * 64


def host(service, generation, index, state="exited", image=None, size=100):
    return {"id": f"id-{service}-{generation}-{index}", "name": f"{service}-{generation}-{index}",
            "image_id": image or image_id(str(generation)), "state": state, "created": NOW - HOUR, "size": size,
            "labels": {"immutable.infra.service": service, "immutable.infra.generation": str(generation),
                       "immutable.infra.image_id": image or image_id(str(generation))}}


def container(name, age=HOUR, labels=None, image=None, state="running"):
    return {"id": f"id-{name}", "name": name, "image_id": image or image_id("e"), "state": state,
            "created": NOW - age, "labels": labels or {}, "size": 10}


def baked(letter, repository="acme/web", age=HOUR, tags=None, labels=None):
    return {"id": image_id(letter), "created": NOW - age, "size": 1000,
            "tags": [f"{repository}:{letter * 12}"] if tags is None else tags,
            "labels": dict({"immutable.infra.inputs_hash": letter * 64, "immutable.infra.name": repository},
                           **(labels or {}))}


def volume(name, age=HOUR, labels=None):
    return {"name": name, "created": NOW - age, "labels": labels or {}}


def options(**values):
    return PruneOptions(**dict({"now": NOW}, **values))


def names(plan, kind, kept=False):
    return sorted(entry["name"] for entry in (plan.kept if kept else plan.remove)[kind])


def test_live_and_keep_previous_generations_stay_older_stopped_ones_go():
    containers = [host("web", 4, 1, "running"), host("web", 4, 2, "running"), host("web", 3, 1), host("web", 2, 1),
                  host("web", 1, 1), host("web", 1, 2)]
    plan = plan_prune({"containers": containers}, options(images=False, builders=False))
    assert names(plan, "hosts") == ["web-1-1", "web-1-2", "web-2-1"]
    assert names(plan, "hosts", kept=True) == ["web-3-1", "web-4-1", "web-4-2"]
    assert "keep_previous=1" in plan.remove["hosts"][0]["reason"]
    assert plan.remove["hosts"][0]["bytes"] == 100

    wider = plan_prune({"containers": containers}, options(images=False, builders=False, keep_previous=2))
    assert names(wider, "hosts") == ["web-1-1", "web-1-2"]
    none_kept = plan_prune({"containers": containers}, options(images=False, builders=False, keep_previous=0))
    assert names(none_kept, "hosts") == ["web-1-1", "web-1-2", "web-2-1", "web-3-1"]


def test_a_running_host_is_never_removed_even_in_an_old_generation():
    containers = [host("web", 3, 1, "running"), host("web", 2, 1), host("web", 1, 1, "restarting")]
    plan = plan_prune({"containers": containers}, options(images=False, builders=False, keep_previous=0))
    assert names(plan, "hosts") == ["web-2-1"]
    assert names(plan, "hosts", kept=True) == ["web-1-1", "web-3-1"]


def test_service_scope_and_services_with_a_rollout_under_way():
    containers = [host("web", 3, 1, "running"), host("web", 1, 1), host("web", 2, 1),
                  host("api", 3, 1, "running"), host("api", 1, 1), host("api", 2, 1),
                  host("db", 3, 1, "running"), host("db", 1, 1), host("db", 2, 1),
                  container("immutable-infra-lock-api", state="created")]
    volumes = [volume("immutable-infra-rollout-db")]
    scoped = plan_prune({"containers": containers, "volumes": volumes}, options(service="web", images=False))
    assert names(scoped, "hosts") == ["web-1-1"]
    everything = plan_prune({"containers": containers, "volumes": volumes}, options(images=False))
    assert names(everything, "hosts") == ["web-1-1"]
    reasons = {entry["name"]: entry["reason"] for entry in everything.kept["hosts"]}
    assert "lock immutable-infra-lock-api is held" in reasons["api-1-1"]
    assert "journal immutable-infra-rollout-db exists" in reasons["db-1-1"]
    # Neither the lock nor the journal is ever a candidate.
    assert all("immutable-infra-lock" not in entry["name"] for entries in everything.remove.values() for entry in entries)
    assert all("immutable-infra-rollout" not in entry["name"] for entries in everything.remove.values()
               for entry in entries)


def test_containers_that_only_look_like_hosts_are_left_alone():
    stray = container("web-1-1", state="exited", labels={"immutable.infra.service": "web"})  # no generation
    other = dict(host("web", 1, 1), name="nginx")  # labelled, but not named like a host
    plan = plan_prune({"containers": [stray, other]}, options(images=False, builders=False, keep_previous=0))
    assert names(plan, "hosts") == []


def test_images_in_use_pinned_or_newest_stay_unused_older_ones_go():
    images = [baked("a", age=5 * HOUR), baked("b", age=4 * HOUR), baked("c", age=3 * HOUR),
              baked("d", age=2 * HOUR, tags=["acme/web:dddddddddddd", "acme/web:pinned-release-1"]),
              baked("e", age=HOUR), baked("9", age=6 * HOUR)]
    containers = [host("web", 2, 1, "running", image=image_id("b")), host("web", 1, 1, image=image_id("c"))]
    plan = plan_prune({"containers": containers, "images": images},
                      options(builders=False, pinned=("999999999999",)))
    assert names(plan, "images") == ["acme/web:aaaaaaaaaaaa"]
    kept = {entry["name"].split(":")[1][:1]: entry["reason"] for entry in plan.kept["images"]}
    assert kept["b"] == "used by container web-2-1" and kept["c"] == "used by container web-1-1"
    assert "pinned by its tag acme/web:pinned-release-1" in kept["d"]
    assert "newest 1 of acme/web" in kept["e"]
    assert "pinned option (999999999999)" in kept["9"]


def test_images_of_removed_hosts_go_with_them_and_their_verdicts_too():
    images = [baked("a", age=3 * HOUR), baked("b", age=2 * HOUR), baked("c", age=HOUR)]
    containers = [host("web", 3, 1, "running", image=image_id("c")), host("web", 2, 1, image=image_id("b")),
                  host("web", 1, 1, image=image_id("a"))]
    volumes = [volume("immutable-infra-verdict-" + "a" * 64, age=1,
                      labels={"immutable.infra.image_id": image_id("a"), "immutable.infra.verdict": "passed"}),
               volume("immutable-infra-verdict-" + "b" * 64, labels={"immutable.infra.image_id": image_id("b")}),
               volume("immutable-infra-attestations-" + "a" * 64, labels={"immutable.infra.image_id": image_id("a")})]
    plan = plan_prune({"containers": containers, "images": images, "volumes": volumes}, options(keep_images=0))
    assert names(plan, "hosts") == ["web-1-1"]
    assert names(plan, "images") == ["acme/web:aaaaaaaaaaaa"]  # b is still used by the kept generation
    assert sorted(names(plan, "verdict_volumes")) == ["immutable-infra-attestations-" + "a" * 64,
                                                      "immutable-infra-verdict-" + "a" * 64]
    reasons = sorted(entry["reason"] for entry in plan.remove["verdict_volumes"])
    assert reasons[0].startswith("attestations of image aaaaaaaaaaaa") and reasons[1].startswith("verdict of")


def test_images_out_of_scope_or_not_baked_here_are_never_candidates():
    images = [baked("a", age=3 * HOUR), baked("b", repository="acme/api", age=3 * HOUR),
              baked("c", repository="acme/api"), {"id": image_id("9"), "created": 0, "tags": ["debian:bookworm"],
                                                  "labels": {}, "size": 5}]
    plan = plan_prune({"images": images, "repositories": {"acme/api"}}, options(builders=False))
    assert names(plan, "images") == ["acme/api:bbbbbbbbbbbb"]
    plan = plan_prune({"images": images}, options(builders=False, keep_images=0))
    assert names(plan, "images") == ["acme/api:bbbbbbbbbbbb", "acme/api:cccccccccccc", "acme/web:aaaaaaaaaaaa"]


def test_leftovers_older_than_min_age_go_younger_ones_may_be_in_progress():
    containers = [container("immutable-infra-bake-abc-1", age=HOUR), container("immutable-infra-bake-abc-2", age=60),
                  container("immutable-infra-verify-x-1", age=HOUR, labels={"immutable.infra.verifying": "sha256:x"}),
                  container("immutable-infra-verify-x-2", age=5, labels={"immutable.infra.verifying": "sha256:x"}),
                  container("immutable-infra-lock-web", age=10 * HOUR, state="created")]
    images = [baked("f", tags=["acme/web:failed-ffffffffffff"], labels={"immutable.infra.failed_bake": "f"}),
              baked("g", age=30, tags=["acme/web:failed-gggggggggggg"])]
    volumes = [volume("immutable-infra-verdict-" + "0" * 64, age=HOUR),
               volume("immutable-infra-verdict-" + "1" * 64, age=10),
               volume("immutable-infra-verdict-" + "g" * 64, age=HOUR),
               volume("immutable-infra-rollout-web", age=10 * HOUR)]
    plan = plan_prune({"containers": containers, "images": images, "volumes": volumes}, options(images=False))
    assert names(plan, "builders") == ["immutable-infra-bake-abc-1"]
    assert names(plan, "verify_hosts") == ["immutable-infra-verify-x-1"]
    assert names(plan, "failed_images") == ["acme/web:failed-ffffffffffff"]
    assert names(plan, "verdict_volumes") == ["immutable-infra-verdict-" + "0" * 64]
    assert "may be running" in plan.kept["builders"][0]["reason"]
    assert names(plan, "hosts") == []
    nothing = plan_prune({"containers": containers, "images": images, "volumes": volumes},
                         options(images=False, builders=False))
    assert nothing.empty


def test_a_builder_whose_bake_timeout_has_not_ended_stays_however_old():
    # both builders are two hours old, past min_age; the first one's bake_timeout ends an hour from NOW
    running = builder_name("abc", "1", NOW + HOUR)
    ended = builder_name("abc", "2", NOW - HOUR)
    assert running == f"immutable-infra-bake-abc-1-until{int(NOW + HOUR)}"
    containers = [container(running, age=2 * HOUR), container(ended, age=2 * HOUR)]
    plan = plan_prune({"containers": containers}, options(images=False))
    assert names(plan, "builders") == [ended] and names(plan, "builders", kept=True) == [running]
    assert "may run until 2027-01-15T09:00:00Z (its bake_timeout)" in plan.kept["builders"][0]["reason"]


def test_min_age_zero_takes_every_leftover():
    containers = [container("immutable-infra-bake-abc-2", age=0)]
    plan = plan_prune({"containers": containers}, options(min_age=0))
    assert names(plan, "builders") == ["immutable-infra-bake-abc-2"]


def test_repositories_of_a_service_come_from_its_hosts_and_its_rollouts():
    records = [{"kind": "rollout", "service": "web", "image_id": image_id("a")},
               {"kind": "bake", "image_id": image_id("a"), "name": "acme/old"},
               {"kind": "rollout", "service": "api", "image_id": image_id("b")}]
    images = [baked("c", repository="acme/web"), baked("b", repository="acme/api")]
    containers = [host("web", 2, 1, image=image_id("c"))]
    assert service_repositories(records, "web", images, containers) == {"acme/old", "acme/web"}


def test_observation_from_docker_disk_usage():
    usage = {"Containers": [{"Id": "c1", "Names": ["/web-1-1"], "ImageID": image_id("a"), "State": "exited",
                             "Created": 1700000000, "Labels": {"immutable.infra.service": "web"}, "SizeRw": 42}],
             "Images": [{"Id": image_id("a"), "RepoTags": ["acme/web:aaa", "<none>:<none>"], "Created": 1700000000,
                         "Labels": None, "Size": 1000, "SharedSize": 900}],
             "Volumes": [{"Name": "v", "CreatedAt": "2023-11-14T22:13:20Z", "Labels": None}]}
    observed = observation_from_disk_usage(usage)
    assert observed["containers"][0] == {"id": "c1", "name": "web-1-1", "image_id": image_id("a"), "state": "exited",
                                         "created": 1700000000.0, "labels": {"immutable.infra.service": "web"},
                                         "size": 42}
    assert observed["images"][0]["tags"] == ["acme/web:aaa"] and observed["images"][0]["size"] == 100
    assert observed["volumes"][0]["created"] == 1700000000.0
    usage["Containers"][0].pop("SizeRw")
    assert observation_from_disk_usage(usage)["containers"][0]["size"] is None
    usage["Containers"][0]["SizeRootFs"] = 5000
    assert observation_from_disk_usage(usage)["containers"][0]["size"] == 0  # the engine leaves a zero SizeRw out


def test_over_engines_generations_are_decided_fleet_wide():
    # Generation 3 runs on rig1 only; its hosts on rig2 stopped (crashed). Generation 2 is the fleet's newest
    # stopped one, so it stays on every engine, even where generation 3 looks stopped.
    rig1 = [host("web", 3, 1, "running"), host("web", 2, 1), host("web", 1, 1)]
    rig2 = [host("web", 3, 2), host("web", 2, 2), host("web", 1, 2)]
    plans = plan_fleet_prune({"rig1": {"containers": rig1}, "rig2": {"containers": rig2}},
                             options(images=False, builders=False))
    assert names(plans["rig1"], "hosts") == ["web-1-1"] and names(plans["rig2"], "hosts") == ["web-1-2"]
    assert names(plans["rig2"], "hosts", kept=True) == ["web-2-2", "web-3-2"]
    assert "generation 3 runs (live)" in plans["rig2"].kept["hosts"][0]["reason"]


def test_over_engines_a_lock_on_the_coordinator_makes_the_service_busy_everywhere():
    lock = container("immutable-infra-lock-web", labels={"immutable.infra.lock": "web"})
    plans = plan_fleet_prune({"rig1": {"containers": [lock, host("web", 1, 1)]},
                              "rig2": {"containers": [host("web", 1, 2), host("web", 2, 1, "running")]}},
                             options(images=False, builders=False, keep_previous=0))
    assert names(plans["rig2"], "hosts") == [] and "is held" in plans["rig2"].kept["hosts"][0]["reason"]


def test_over_engines_an_image_is_pruned_per_engine():
    # rig1 still runs image b; rig2 runs c and holds b unused: b goes from rig2 only, with its verdict there.
    images = [baked("a", age=3 * HOUR), baked("b", age=2 * HOUR), baked("c", age=HOUR)]
    verdict_b = volume("immutable-infra-verdict-" + "b" * 64, labels={"immutable.infra.image_id": image_id("b")})
    plans = plan_fleet_prune({
        "rig1": {"containers": [host("web", 2, 1, "running", image=image_id("b"))], "images": images[:2],
                 "volumes": [verdict_b]},
        "rig2": {"containers": [host("web", 3, 1, "running", image=image_id("c"))], "images": images,
                 "volumes": [verdict_b]},
    }, options(keep_images=0))
    assert names(plans["rig1"], "images") == ["acme/web:aaaaaaaaaaaa"]
    assert names(plans["rig2"], "images") == ["acme/web:aaaaaaaaaaaa", "acme/web:bbbbbbbbbbbb"]
    assert names(plans["rig1"], "verdict_volumes") == [] and names(plans["rig2"], "verdict_volumes") == [verdict_b["name"]]


def test_one_engine_plans_as_before():
    containers = [host("web", 2, 1, "running"), host("web", 1, 1), host("web", 0, 1)]
    single = plan_prune({"containers": containers}, options(images=False, builders=False))
    fleet = plan_fleet_prune({"default": {"containers": containers}}, options(images=False, builders=False))
    assert single.remove == fleet["default"].remove and single.kept == fleet["default"].kept
