"""The builder's systemctl: how it reads units and turns Exec lines into commands (no processes run here).

tests/integration/test_builder_systemctl.py runs it with real units and processes in a container.
"""

from __future__ import annotations

import ast
import importlib.util

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils.bake import builder

# The very file the bake copies into builders; it is a program, not a module of the collection.
_spec = importlib.util.spec_from_file_location("builder_systemctl", builder.SYSTEMCTL_SOURCE)
assert _spec and _spec.loader
standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(standin)

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


def test_template_units_and_environment_files(units):
    (units / "worker@.service").write_text(
        "[Service]\nEnvironment=NAME=%i 'GREETING=hello world'\nEnvironmentFile=-/no/such/file\n"
        f"EnvironmentFile={units}/%i.env\nExecStart=/bin/echo $NAME ${{GREETING}}!\n")
    (units / "blue.env").write_text("# comment\nCOLOUR=\"deep blue\"\nEMPTY=\nSPLIT=a\\\nb\n")
    unit = standin.Unit("worker@blue")
    assert unit.path == str(units / "worker@.service") and unit.kind == "simple"
    env = standin.environment(unit, None)
    assert env["NAME"] == "blue" and env["GREETING"] == "hello world"
    assert env["COLOUR"] == "deep blue" and env["EMPTY"] == "" and env["SPLIT"] == "ab"
    assert env["IMMUTABLE_INFRA_UNIT"] == "worker@blue.service"
    assert standin.expand(unit, unit.main_command(), env)[1] == ["/bin/echo", "blue", "hello world!"]
    (units / "broken.service").write_text(f"[Service]\nEnvironmentFile={units}/missing.env\nExecStart=/bin/true\n")
    with pytest.raises(standin.Failed, match="broken.service: EnvironmentFile .*missing.env cannot be read"):
        standin.environment(standin.Unit("broken"), None)


def test_a_unit_that_needs_an_exec_start_and_has_none_says_so(units):
    (units / "empty.service").write_text("[Service]\nType=forking\n")
    with pytest.raises(standin.Failed, match="empty.service has no ExecStart"):
        standin.Unit("empty").main_command()


def test_started_units_are_listed_newest_first(units):
    for order, name in ((3.0, "c.service"), (1.0, "a.service"), (2.0, "b.service")):
        standin.write_state(name, {"pid": None, "order": order})
    standin.set_manager_environment({"KEY": "value"}, remove=[])
    assert standin.started_units() == ["c.service", "b.service", "a.service"]
    assert standin.manager_environment() == {"KEY": "value"}


@pytest.mark.parametrize("value, expected", [("SIGINT", 2), ("INT", 2), ("9", 9), ("SIGNOSUCH", 15)])
def test_kill_signals(value, expected):
    assert standin.signal_number(value) == expected


def test_options_and_their_values_are_not_unit_names():
    assert standin.words_of(["--no-pager", "-p", "MainPID", "--now", "enable", "a", "--type=service", "b"]) == \
        ["enable", "a", "b"]
    assert standin.words_of(["--version"]) == []


def _annotations(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            yield from (argument.annotation for argument in arguments if argument.annotation)
            if node.returns:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def test_the_program_runs_on_python_3_6():
    """Builders run it with their own Python, which may be 3.6 (EL8's platform Python): its grammar,
    no annotations that 3.6 cannot evaluate (list[str], str | None) and the standard library only."""
    with open(builder.SYSTEMCTL_SOURCE, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), feature_version=(3, 6))
    for annotation in _annotations(tree):
        if isinstance(annotation, ast.Constant):
            continue  # a string annotation is never evaluated
        for node in ast.walk(annotation):
            assert not isinstance(node, ast.BinOp), f"line {node.lineno}: 'X | Y' needs Python 3.10"
            assert not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                        and node.value.id in ("list", "dict", "tuple", "set", "type")), \
                f"line {node.lineno}: {node.value.id}[...] needs Python 3.9; use typing"
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "__future__" not in imported
    standard_library = {"glob", "grp", "json", "os", "pwd", "re", "select", "shlex", "signal", "socket", "subprocess",
                        "sys", "time", "typing"}
    assert imported <= standard_library, imported - standard_library
