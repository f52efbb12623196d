"""The client library and ``txm send-ttp`` against a real server."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from txm import manage
from txm.client import (
    LastSample,
    TTPClient,
    TTPConnectionError,
    TTPReplyError,
    parse_last,
)
from txm.serve import ServerThread


@pytest.fixture
def server(settings, database):
    manage.add_unit("M1", "s3cret", 2)
    manage.add_unit("L1", "k", 2, labels="Flow,Level", show_labels=True)
    database.close()
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=10, module_services=False) as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_upload_and_last(server):
    with TTPClient("127.0.0.1", server.ttp_port, timeout=10) as client:
        assert client.upload("M1", "s3cret", [(dt.datetime(2009, 1, 16, 15, 30, 45), [11, 22.5]),
                                              (dt.datetime(2009, 1, 16, 15, 30, 46, 500), [12.0, -1])]) == "OK"
        last = client.last("M1", "s3cret")
    assert last.timestamp == dt.datetime(2009, 1, 16, 15, 30, 46, 500)
    assert last.values == [12.0, -1.0] and last.labels is None and last.id > 0


def test_last_with_labels(server):
    with TTPClient("127.0.0.1", server.ttp_port, timeout=10) as client:
        client.upload("L1", "k", [(dt.datetime(2020, 5, 1), [1, 2])])
        assert client.last("L1", "k").labels == ["Flow", "Level"]


@pytest.mark.parametrize("call, code", [
    (lambda c: c.last("M1", "s3cret"), 404),
    (lambda c: c.last("M1", "wrong"), 402),
    (lambda c: c.last("NO", "s3cret"), 405),
    (lambda c: c.upload("M1", "s3cret", [(dt.datetime(2020, 1, 1), [1])]), 400),
])
def test_error_replies_raise_a_typed_error_with_the_code(server, call, code):
    with TTPClient("127.0.0.1", server.ttp_port, timeout=10) as client:
        with pytest.raises(TTPReplyError) as info:
            call(client)
    assert info.value.code == code


def test_duplicate_upload_error_carries_406_and_the_reply(server):
    sample = (dt.datetime(2020, 1, 1), [1, 2])
    with TTPClient("127.0.0.1", server.ttp_port, timeout=10) as client:
        client.upload("M1", "s3cret", [sample])
        with pytest.raises(TTPReplyError) as info:
            client.upload("M1", "s3cret", [sample])
    assert info.value.code == 406
    assert info.value.reply == "406 Duplicate sample 1<2020-01-01 00:00:00>"


def test_no_server_is_a_connection_error():
    with pytest.raises(TTPConnectionError):
        TTPClient("127.0.0.1", free_port(), timeout=5).request("TTP /dl/M1/last k")


def test_parse_last():
    assert parse_last("OK <7 2009-01-16 15:30:45.100000 A=1 B=2.5>") == LastSample(
        7, dt.datetime(2009, 1, 16, 15, 30, 45, 100000), [1.0, 2.5], ["A", "B"])
    with pytest.raises(TTPReplyError):
        parse_last("OK")


# --- txm send-ttp ------------------------------------------------------------------------------------


def test_send_ttp_up_and_last_exit_0(server, run_cli):
    port = str(server.ttp_port)
    result = run_cli("send-ttp", "--port", port, "up", "M1", "s3cret", "--value", "11", "--value", "22",
                     "--time", "2009-1-16 15:30:45")
    assert result.output == "OK\n"
    result = run_cli("send-ttp", "--port", port, "last", "M1", "s3cret")
    assert result.output.endswith(" 2009-01-16 15:30:45 11 22>\n")


def test_send_ttp_raw_lines_and_stdin(server, run_cli):
    port = str(server.ttp_port)
    result = run_cli("send-ttp", "--port", port, "TTP /up/M1/<2009-1-16 15:30:45;1;2> s3cret",
                     "TTP /dl/M1/last s3cret")
    assert result.output.splitlines()[0] == "OK"
    result = run_cli("send-ttp", "--port", port, input="TTP /dl/M1/last s3cret\nTTP /dl/M1/last s3cret\n")
    assert len(result.output.splitlines()) == 2


def test_send_ttp_any_error_code_exits_1(server, run_cli):
    result = run_cli("send-ttp", "--port", str(server.ttp_port), "TTP /up/M1/<2009-1-16 15:30:45;1;2> s3cret",
                     "TTP /dl/M1/last wrong", expect=1)
    assert result.output == "OK\n402 Unauthorized\n"
    result = run_cli("send-ttp", "--port", str(server.ttp_port), "last", "M1", "bad", expect=1)
    assert result.output == "402 Unauthorized\n"


def test_send_ttp_no_server_exits_2(run_cli):
    result = run_cli("send-ttp", "--port", str(free_port()), "last", "M1", "k", expect=2)
    assert "cannot connect" in result.output


def test_send_ttp_usage_errors_exit_2(run_cli):
    assert "needs at least one --value" in run_cli("send-ttp", "up", "M1", "k", expect=2).output
    assert "takes CODE and KEY" in run_cli("send-ttp", "last", "M1", expect=2).output


def test_client_reconnects_when_the_server_closes_after_each_reply(settings, database, run_cli):
    manage.add_unit("M1", "s3cret", 1)
    database.close()
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1", SOCKET_OPEN=False), timeout=10,
                      module_services=False) as running:
        with TTPClient("127.0.0.1", running.ttp_port, timeout=10) as client:
            for second in range(3):
                assert client.upload("M1", "s3cret", [(dt.datetime(2020, 1, 1, 0, 0, second), [second])]) == "OK"
            assert client.last("M1", "s3cret").values == [2.0]
        result = run_cli("send-ttp", "--port", str(running.ttp_port), "TTP /dl/M1/last s3cret",
                         "TTP /dl/M1/last s3cret")
        assert len(result.output.splitlines()) == 2
