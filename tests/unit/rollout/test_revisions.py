from __future__ import annotations

import re

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError
from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import rollback_target, service_revisions


def record(time, image, result="succeeded", service="web", kind="rollout"):
    return {"kind": kind, "service": service, "time": time, "image_id": image, "result": result}


RECORDS = [
    record("2026-01-01T00:00:01Z", "sha256:a"),
    record("2026-01-01T00:00:02Z", "sha256:b", kind="bake"),
    record("2026-01-01T00:00:03Z", "sha256:x", service="api"),
    record("2026-01-01T00:00:05Z", "sha256:c", result="rolled back"),
    record("2026-01-01T00:00:04Z", "sha256:b"),  # written late by a second controller
    record("2026-01-01T00:00:06Z", "sha256:d"),
]


def test_revisions_number_the_service_rollouts_in_time_order():
    revisions = service_revisions(RECORDS, "web")
    assert [(entry["revision"], entry["image_id"]) for entry in revisions] == [
        (1, "sha256:a"), (2, "sha256:b"), (3, "sha256:c"), (4, "sha256:d")]


def test_default_target_is_the_newest_success_with_another_image():
    revisions = service_revisions(RECORDS, "web")
    assert rollback_target(revisions, "sha256:d")["revision"] == 2
    assert rollback_target(revisions, "sha256:b")["revision"] == 4


def test_the_same_rollback_run_again_stays_where_the_first_one_went():
    rollouts = [record("2026-12-01T10:00:00Z", "sha256:a"), record("2026-12-01T11:00:00Z", "sha256:b")]
    assert rollback_target(service_revisions(rollouts, "web"), "sha256:b")["revision"] == 1
    back = dict(record("2026-12-01T12:00:00Z", "sha256:a"), rollback_to_revision=1)
    again = service_revisions([*rollouts, back], "web")
    assert rollback_target(again, "sha256:a")["revision"] == 3  # the rollback itself: a is already live
    assert rollback_target(again, "sha256:a", revision=2)["revision"] == 2  # forward again only when asked


@pytest.mark.parametrize("revision, message", [
    (9, "Revision 9 does not exist; this service has revisions 1 to 4"),
    (3, "Revision 3 did not succeed (rolled back)"),
])
def test_explicit_targets_are_checked(revision, message):
    with pytest.raises(InfraError, match=re.escape(message)):
        rollback_target(service_revisions(RECORDS, "web"), "sha256:d", revision)


def test_no_target_without_history_or_alternatives():
    with pytest.raises(InfraError, match="has no rollout of this service"):
        rollback_target([], None)
    with pytest.raises(InfraError, match="No successful revision with another image"):
        rollback_target(service_revisions([record("t", "sha256:a")], "web"), "sha256:a")


def test_recently_live_generations_orders_by_the_last_time_each_was_made_live():
    from ansible_collections.immutable.infra.plugins.plugin_utils.rollout.revisions import recently_live_generations
    records = [{"time": "2026-01-01T00:00:01Z", "generation": 1, "result": "succeeded"},
               {"time": "2026-01-01T00:00:02Z", "generation": 2, "result": "succeeded"},
               {"time": "2026-01-01T00:00:03Z", "generation": 3, "result": "succeeded"},
               {"time": "2026-01-01T00:00:04Z", "generation": 1, "result": "succeeded"},  # a rollback to 1
               {"time": "2026-01-01T00:00:05Z", "generation": 4, "result": "rolled back"}]
    assert recently_live_generations(records) == [1, 3, 2]
