"""The builder's systemctl: how it reads units and turns Exec lines into commands (no processes run here)."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder
from ansible_collections.immutable.infra.plugins.plugin_utils.bake import systemctl_standin as standin

MARIADB = """[Unit]
Description=MariaDB
[Service]
Type=notify
User=mysql
Environment="MYSQLD_OPTS=" "LANG=C"
ExecStartPre=+/usr/bin/install -m 755 -o mysql -g root -d /var/run/mysqld
ExecStartPre=/bin/sh -c "[ ! -e /usr/bin/galera_recovery ] && VAR= || VAR=`/usr/bin/galera_recovery`; [ $? -eq 0 ] \\
 && systemctl set-environment _WSREP_START_POSITION=$VAR || exit 1"
ExecStart=/usr/sbin/mariadbd $MYSQLD_OPTS $_WSREP_NEW_CLUSTER $_WSREP_START_POSITION
TimeoutStopSec=900
[Install]
WantedBy=multi-user.target
Alias=mysql.service
"""


@pytest.fixture
def units(tmp_path, monkeypatch):
    monkeypatch.setattr(standin, "UNIT_DIRS", (str(tmp_path),))
    monkeypatch.setattr(standin, "STATE", str(tmp_path / "state"))
    monkeypatch.setattr(standin, "EXTERNAL", str(tmp_path / "active"))
    monkeypatch.setattr(standin, "ABSENT", str(tmp_path / "absent"))
    (tmp_path / "mariadb.service").write_text(MARIADB)
    (tmp_path / "mariadb.service.d").mkdir()
    (tmp_path / "mariadb.service.d" / "override.conf").write_text("[Service]\nLimitNOFILE=1024\nTimeoutStopSec=\n")
    return tmp_path


def test_unit_files_are_read_with_their_drop_ins(units):
    unit = standin.Unit("mariadb")
    assert unit.name == "mariadb.service" and unit.kind == "notify"
    assert unit.get("LimitNOFILE") == "1024"
    assert unit.all("TimeoutStopSec") == []  # an empty assignment resets, as in systemd
    assert len(unit.all("ExecStartPre")) == 2
    assert standin.wanted_by(unit) == ["multi-user.target"]


def test_exec_lines_expand_variables_as_systemd_does(units):
    unit = standin.Unit("mariadb")
    env = {"MYSQLD_OPTS": "", "_WSREP_START_POSITION": "--wsrep-start-position=1 --x"}
    assert standin.expand(unit, unit.all("ExecStart")[0], env) == \
        ("", ["/usr/sbin/mariadbd", "--wsrep-start-position=1", "--x"])
    flags, argv = standin.expand(unit, unit.all("ExecStartPre")[0], env)
    assert flags == "+" and argv[0] == "/usr/bin/install"
    _flags, argv = standin.expand(unit, unit.all("ExecStartPre")[1], env)
    assert argv[:2] == ["/bin/sh", "-c"] and "$VAR" in argv[2]  # $VAR inside a word is the shell's
    assert standin.expand(unit, "-/bin/echo ${LANG}x %n $$HOME", {"LANG": "C"}) == \
        ("-", ["/bin/echo", "Cx", "mariadb.service", "$HOME"])


@pytest.mark.parametrize("value, expected", [("90", 90.0), ("5min", 300.0), ("1min 30s", 90.0), ("500ms", 0.5),
                                             ("", 7.0), ("infinity", standin.STOP_TIMEOUT * 10)])
def test_timeouts(value, expected):
    assert standin.seconds(value, 7.0) == expected


def test_arguments_and_options_are_told_apart(units, capsys):
    assert standin.main(["--no-pager", "-p", "ActiveState", "show", "mariadb"]) == 0
    shown = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["LoadState"] == "loaded" and shown["ActiveState"] == "inactive"
    assert shown["UnitFileState"] == "disabled" and shown["Type"] == "notify"
    # A service the image does not have: a handler's restart (which Ansible's systemd module turns into a
    # start when the service is stopped) has nothing to do and is recorded; enabling it fails.
    assert standin.main(["restart", "nosuch"]) == 0 and standin.main(["try-restart", "nosuch"]) == 0
    assert standin.main(["start", "other"]) == 0
    assert "other.service is not installed; nothing to start" in capsys.readouterr().err
    assert (units / "absent").read_text().split() == ["nosuch.service", "nosuch.service", "other.service"]
    assert standin.main(["enable", "nosuch"]) == 1
    assert "Unit file nosuch.service does not exist" in capsys.readouterr().err
    assert standin.main(["daemon-reload"]) == 0 and standin.main(["--version"]) == 0


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
