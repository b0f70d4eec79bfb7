"""The builder's set-up and clean-up scripts as the bake reads them (no container here)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.core.common import InfraError


@pytest.mark.parametrize("failure, hinted", [
    ({"action": "ansible.posix.mount", "task": "Mount /proc", "msg": "must be superuser to unmount"}, True),
    ({"action": "ansible.posix.sysctl", "task": "s", "msg": "anything"}, True),
    ({"action": "community.general.modprobe", "task": "m", "msg": "modprobe: FATAL: Module x not found"}, True),
    ({"action": "ansible.builtin.command", "task": "c", "stderr": "sysctl: permission denied on key 'x'"}, True),
    ({"action": "ansible.builtin.command", "task": "c", "stderr": "syntax error"}, False),
    ({"action": "ansible.builtin.apt", "task": "a", "msg": "Permission denied"}, False),
    (None, False),
])
def test_host_level_failures_name_both_ways_out(failure, hinted):
    hint = builder.host_level_hint(failure, privileged=False)
    assert bool(hint) == hinted
    if hinted:
        assert "skip_tags" in hint and "privileged: true" in hint and "not a booted machine" in hint


def test_privileged_builder_hint_does_not_offer_privileged_again():
    hint = builder.host_level_hint({"action": "sysctl", "task": "s"}, privileged=True)
    assert "skip_tags" in hint and "privileged: true" not in hint


def test_finish_output_names_the_services_the_image_does_not_have():
    output = "stopping\nabsent unit: apache2.service\nabsent unit: php8.2-fpm.service\n"
    assert builder.absent_units(output) == ["apache2.service", "php8.2-fpm.service"]
    assert builder.absent_units("") == []
    assert "apache2.service, which the image does not have; nothing ran for it" in \
        builder.absent_units_warning(["apache2.service"])


def test_the_stand_in_is_found_at_the_collection_root_and_run_by_the_builders_python():
    assert builder.SYSTEMCTL_SOURCE == os.path.join(builder.COLLECTION_ROOT, "builder", "systemctl.py")
    program = builder.systemctl_standin("/usr/libexec/platform-python")
    assert program.startswith(b"#!/usr/libexec/platform-python\n")
    assert builder.STANDIN_MARKER.encode() in program  # how FINISH tells the stand-in from a real systemctl


def test_a_collection_without_its_builder_programs_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(builder, "SYSTEMCTL_SOURCE", str(tmp_path / "builder" / "systemctl.py"))
    with pytest.raises(InfraError, match="The collection is incomplete: .*install immutable.infra again"):
        builder.systemctl_standin("/usr/bin/python3")
