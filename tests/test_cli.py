"""The command line: help on every command, exit codes, and the administrative commands."""

from __future__ import annotations

import json
import subprocess

import click
import pytest
from click.testing import CliRunner

from tests.conftest import TXM, txm_subprocess_env
from txm.cli import cli
from txm.db import schema
from txm.passwords import check_password


def walk(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, path + (name,))


COMMANDS = [path for path, _ in walk(cli)]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "txm")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_an_example(path, flag):
    result = CliRunner().invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    command = dict(walk(cli))[path]
    assert command.help and len(command.help.strip()) > 20
    if path:  # the top-level help lists commands instead
        assert "Example" in result.output and "txm " in result.output.split("Example", 1)[1]


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run([*TXM, "--version"], capture_output=True, text=True, env=txm_subprocess_env(),
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("txm, version")


def test_unknown_command_and_option_exit_2():
    assert CliRunner().invoke(cli, ["nosuch"]).exit_code == 2
    assert CliRunner().invoke(cli, ["unit", "add", "--bogus"]).exit_code == 2


def test_commands_before_syncdb_point_to_it(run_cli, config_file, backend):
    if backend.name != "sqlite":
        result = run_cli("unit", "list", expect=1)
        assert "txm syncdb" in result.output
        return
    for args in (["unit", "list"], ["user", "list"], ["reset-admin"], ["unit", "show", "M1"]):
        result = run_cli(*args, expect=1)
        assert "there is no database" in result.output and "txm syncdb" in result.output
        assert "Traceback" not in result.output


def test_new_user_story(run_cli):
    """syncdb, add a unit and a user from the command line, list them."""
    result = run_cli("syncdb")
    assert "Created" in result.output and "Administrator" in result.output
    result = run_cli("syncdb")
    assert "already exist" in result.output
    run_cli("unit", "add", "M1", "--key", "s3cret", "--fields", "4", "--name", "North tank",
            "--labels", "Flow,Level,Temp,Pressure", "--show-labels")
    run_cli("user", "add", "alice", "--email", "alice@example.com", "--staff", "--password", "l0ng-and-mixed")
    units = json.loads(run_cli("unit", "list", "--json").output)
    assert units == [{"code": "M1", "name": "North tank", "fields": 4,
                      "labels": ["Flow", "Level", "Temp", "Pressure"], "samples": 0}]
    users = json.loads(run_cli("user", "list", "--json").output)
    assert [(u["username"], u["staff"], u["superuser"]) for u in users] == [
        ("Administrator", True, True), ("alice", True, False)]
    shown = run_cli("unit", "show", "M1").output
    assert "North tank" in shown and "s3cret" not in shown
    assert schema.Unit.get(schema.Unit.code == "M1").show_labels is True


def test_user_commands(run_cli):
    run_cli("syncdb")
    result = run_cli("user", "add", "bob", input="pw\n")  # not a terminal: read from stdin
    assert "weak password" in result.output
    assert check_password("pw", schema.User.get(schema.User.username == "bob").password)
    run_cli("user", "passwd", "bob", "--password", "n3w-passw0rd")
    assert check_password("n3w-passw0rd", schema.User.get(schema.User.username == "bob").password)
    assert "already exists" in run_cli("user", "add", "bob", "--password", "x", expect=2).output
    assert "at least one character" in run_cli("user", "add", "carol", "--password", "", expect=2).output
    assert "give --password" in run_cli("user", "add", "dave", input="", expect=2).output
    assert "no user named 'zed'" in run_cli("user", "passwd", "zed", "--password", "x", expect=1).output
    run_cli("user", "remove", "bob")
    assert "last active superuser" in run_cli("user", "remove", "Administrator", expect=1).output


def test_superuser_flag_implies_staff(run_cli):
    run_cli("syncdb")
    run_cli("user", "add", "root2", "--superuser", "--password", "l0ng-and-mixed")
    u = schema.User.get(schema.User.username == "root2")
    assert u.is_superuser and u.is_staff


def test_unit_add_refuses_bad_codes_with_a_reason(run_cli):
    run_cli("syncdb")
    result = run_cli("unit", "add", "M-1", "--key", "k", "--fields", "2", expect=2)
    assert "letters and digits" in result.output
    result = run_cli("unit", "add", "M1", "--key", "k", "--fields", "99", expect=2)
    assert "1 to 32 data fields" in result.output
    run_cli("unit", "add", "M1", "--key", "k", "--fields", "2")
    assert "already exists" in run_cli("unit", "add", "M1", "--key", "k", "--fields", "2", expect=2).output


def test_unit_remove_asks_when_there_are_samples(run_cli):
    import datetime as dt

    run_cli("syncdb")
    run_cli("unit", "add", "M1", "--key", "k", "--fields", "1")
    run_cli("unit", "add", "M2", "--key", "k", "--fields", "1")
    schema.Sample.create(unit=schema.Unit.get(schema.Unit.code == "M1"), timestamp=dt.datetime(2020, 1, 1), ch1=1)
    result = run_cli("unit", "remove", "M1", expect=1)
    assert "has 1 sample(s); add --yes" in result.output
    assert schema.Unit.select().where(schema.Unit.code == "M1").exists()
    run_cli("unit", "remove", "M1", "--yes")
    run_cli("unit", "remove", "M2")  # no samples: no question
    assert schema.Unit.select().count() == 0
    assert "no unit with code 'M1'" in run_cli("unit", "remove", "M1", expect=1).output


def test_reset_admin_after_rename(run_cli):
    run_cli("syncdb")
    admin = schema.User.get_by_id(1)
    admin.username = "chief"
    admin.save()
    run_cli("user", "passwd", "chief", "--password", "forgotten-one")
    result = run_cli("reset-admin")
    assert "'chief'" in result.output
    assert check_password("admin", schema.User.get_by_id(1).password)
