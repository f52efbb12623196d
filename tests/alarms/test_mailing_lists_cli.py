"""``txm mailing-list add/remove/show``: scripted installations manage mailing lists."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def ready(run_cli):
    run_cli("syncdb")
    run_cli("unit", "add", "M1", "--key", "k", "--fields", "1")
    run_cli("user", "add", "alice", "--email", "alice@example.com", "--password", "pw")
    run_cli("user", "add", "bob", "--password", "pw")
    return run_cli


def members(run_cli, code="M1"):
    return json.loads(run_cli("mailing-list", "show", code, "--json").output)


def test_add_show_remove(ready):
    run_cli = ready
    assert members(run_cli) == []
    assert "is empty" in run_cli("mailing-list", "show", "M1").output
    result = run_cli("mailing-list", "add", "M1", "alice", "bob")
    assert "Added alice, bob to the mailing list of unit 'M1'." in result.output
    assert "bob has no email address" in result.output
    assert [(m["username"], m["receives"]) for m in members(run_cli)] == [("alice", True), ("bob", False)]
    shown = run_cli("mailing-list", "show", "M1").output
    assert "alice@example.com" in shown and "no: no email address" in shown
    assert "Already on it: alice." in run_cli("mailing-list", "add", "M1", "alice").output
    result = run_cli("mailing-list", "remove", "M1", "bob", "alice")
    assert "Removed bob, alice" in result.output
    assert members(run_cli) == []
    assert "Not on it: bob." in run_cli("mailing-list", "remove", "M1", "bob").output


def test_unknown_unit_or_user_changes_nothing(ready):
    run_cli = ready
    result = run_cli("mailing-list", "add", "NOPE", "alice", expect=1)
    assert "there is no unit with code 'NOPE'" in result.output and "Traceback" not in result.output
    result = run_cli("mailing-list", "add", "M1", "alice", "zed", "yan", expect=1)
    assert "there is no user named 'zed', 'yan'" in result.output
    assert members(run_cli) == []  # alice was not added either
    assert "there is no user named 'zed'" in run_cli("mailing-list", "remove", "M1", "zed", expect=1).output
    assert "there is no unit" in run_cli("mailing-list", "show", "NOPE", expect=1).output


def test_users_are_required(ready):
    result = ready("mailing-list", "add", "M1", expect=2)
    assert "Missing argument" in result.output
