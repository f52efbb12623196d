"""The TTP handler without sockets: verb table, group commit, savepoints, COMMIT_INTERVAL."""

from __future__ import annotations

import pytest

from txm import db as models
from txm import manage
from txm.ttp.handler import Handler, builtin_verbs, keys_match
from txm.ttp.parser import ProtocolError, parse_request


def other_connection_count(settings, code: str) -> int:
    """Samples of a unit as a second, independent connection sees them (committed only)."""
    other = models.make_database(settings)
    other.connect()
    try:
        cursor = other.execute_sql(
            "SELECT COUNT(*) FROM sample JOIN unit ON unit.id = sample.unit_id WHERE unit.code = %s"
            .replace("%s", "?" if isinstance(other, models.pw.SqliteDatabase) else "%s"), (code,))
        return cursor.fetchone()[0]
    finally:
        other.close()


def requests(*lines: str):
    return [parse_request(line.encode()) for line in lines]


@pytest.fixture
def units(database):
    manage.add_unit("A", "ka", 1)
    manage.add_unit("B", "kb", 2)
    return database


def make_handler(settings, database, extra=None, **values):
    handler = Handler(settings.replace(**values) if values else settings, database,
                      {**builtin_verbs(), **(extra or {})})
    handler.open()
    return handler


def test_keys_match_is_exact():
    assert keys_match("s3cret", "s3cret")
    assert not keys_match("s3cret", "S3CRET") and not keys_match("", "x") and not keys_match("x", "")
    assert keys_match("clé", "clé")


def test_one_pass_answers_in_order_and_is_committed_before_it_returns(settings, units):
    handler = make_handler(settings, units)
    replies = handler.handle(requests(
        "TTP /up/A/<2020-1-1 0:0:0;1> ka",
        "TTP /up/B/<2020-1-1 0:0:0;1;2> kb",
        "TTP /up/A/<2020-1-1 0:0:1;1> wrong",
        "TTP /dl/A/last ka",
        "TTP /up/B/<2020-1-1 0:0:0;1;2> kb",
        "TTP /xx/A/last ka",
    ))
    assert replies[:4] == ["OK", "OK", "402 Unauthorized", replies[3]]
    assert replies[3].endswith(" 2020-01-01 00:00:00 1>")
    assert replies[4] == "406 Duplicate sample 1<2020-1-1 0:0:0>"
    assert replies[5] == "501 Not implemented"
    assert other_connection_count(settings, "A") == 1
    assert other_connection_count(settings, "B") == 1
    handler.close()


def test_a_failing_verb_leaves_nothing_and_harms_no_other_request(settings, units):
    def half_then_fail(call):
        call.store.insert_samples(call.unit(), [(call.received, (5.0,))], call.received)
        raise RuntimeError("bug after a write")

    def refuse_after_write(call):
        call.store.insert_samples(call.unit(), [(call.received.replace(year=2001), (5.0,))], call.received)
        raise ProtocolError(400, "refused")

    handler = make_handler(settings, units, {"bug": half_then_fail, "nope": refuse_after_write})
    replies = handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka", "TTP /bug/A/x ka",
                                      "TTP /nope/A/x ka", "TTP /up/A/<2020-1-1 0:0:1;1> ka"))
    assert replies == ["OK", "500 Internal error", "400 Bad request", "OK"]
    assert other_connection_count(settings, "A") == 2
    handler.close()


def test_after_commit_runs_once_committed(settings, units):
    seen = []

    def verb(call):
        call.unit()
        call.after_commit(lambda: seen.append(other_connection_count(settings, "A")))
        call.store.insert_samples(call.unit(), [(call.received, (1.0,))], call.received)
        return "OK"

    handler = make_handler(settings, units, {"mark": verb})
    assert handler.handle(requests("TTP /mark/A/x ka")) == ["OK"]
    assert seen == [1]
    handler.close()


def test_the_same_instant_sent_in_any_form_is_one_sample(settings, units):
    """Zero-padded uploads take the parser's plain path and keep the text they sent: it must be
    the text any other form of the same instant is stored as, or duplicates would slip in."""
    handler = make_handler(settings, units)
    assert handler.handle(requests(
        "TTP /up/A/<2020-01-01 00:00:00.000000;1><2020-01-01 00:00:01.500000;2><2020-01-01 00:00:02;3> ka",
        "TTP /up/A/<2020-1-1 0:0:0;1><20-1-1 0:0:1.5;2><2020-01-01 00:00:02.000000;3><2020-1-1 0:0:3;4> ka",
        "TTP /up/A/<2020-01-01 00:00:03;4><2020-01-01 00:00:04;5><2020-01-01 00:00:04.000000;6> ka",
    )) == ["OK", "406 Duplicate sample 1<2020-1-1 0:0:0>2<20-1-1 0:0:1.5>3<2020-01-01 00:00:02.000000>",
           "406 Duplicate sample 1<2020-01-01 00:00:03>3<2020-01-01 00:00:04.000000>"]
    assert other_connection_count(settings, "A") == 5
    with units.bind_ctx([models.Sample]):
        stored = sorted(str(s.timestamp) for s in models.Sample.select())
    assert stored == ["2020-01-01 00:00:00", "2020-01-01 00:00:01.500000", "2020-01-01 00:00:02",
                      "2020-01-01 00:00:03", "2020-01-01 00:00:04"]
    handler.close()


def test_commit_interval_commits_every_n_writes_and_on_flush(settings, units):
    handler = make_handler(settings, units, COMMIT_INTERVAL=3)
    replies = handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka", "TTP /dl/A/last ka"))
    assert replies[0] == "OK" and replies[1].endswith(" 2020-01-01 00:00:00 1>")
    # (the download above saw its own pass's upload; nothing is committed yet)
    assert other_connection_count(settings, "A") == 0
    handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1> ka"))
    assert other_connection_count(settings, "A") == 0
    handler.handle(requests("TTP /up/A/<2020-1-1 0:0:2;1> ka"))  # the third write commits
    assert other_connection_count(settings, "A") == 3
    handler.handle(requests("TTP /up/A/<2020-1-1 0:0:3;1> ka"))
    assert handler.next_deadline() is not None
    handler.close()  # flushes
    assert other_connection_count(settings, "A") == 4


def test_unit_changes_apply_to_the_next_pass(settings, units):
    handler = make_handler(settings, units)
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka")) == ["OK"]
    other = models.make_database(settings)  # as the admin panel or txm unit would: another connection
    with other.bind_ctx([models.Unit]):
        models.Unit.update(key="new", channels=2).where(models.Unit.code == "A").execute()
    other.close()
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1;2> ka")) == ["402 Unauthorized"]
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1> new")) == ["400 Bad request"]
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1;2> new")) == ["OK"]
    handler.close()


def test_a_verb_returning_no_text_is_500_and_line_breaks_never_split_a_reply(settings, units):
    handler = make_handler(settings, units, {"none": lambda call: None, "two": lambda call: "OK a\rb\nc"})
    assert handler.handle(requests("TTP /none/A/x ka", "TTP /two/A/x ka", "TTP /dl/A/last ka")) == [
        "500 Internal error", "OK a b c", "404 Data Not found"]
    handler.close()


_REPLY_RE = __import__("re").compile(r"(OK( [^\r\n]*)?|(400|402|404|405|406|500|501) [^\r\n]+)\Z")


def test_random_request_lines_always_get_a_protocol_reply(settings, units):
    """Bytes in, whatever they are: every complete line gets exactly one well-formed reply."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    from txm.ttp.parser import TOO_LONG, Framer

    handler = make_handler(settings, units)
    pieces = st.sampled_from([b"TTP /", b"up/", b"dl/", b"al/", b"A/", b"B/", b"last", b" ka", b" kb", b"<",
                              b">", b";", b"2020-1-1 0:0:", b"1", b"-2.5", b"e9", b"\r", b"\n", b" ", b"\xff"])

    @hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.one_of(pieces, st.binary(max_size=5)), max_size=30))
    def check(parts):
        framer = Framer(200)
        lines = framer.feed(b"".join(parts) + b"\r")
        parsed, replies = [], []
        for line in lines:
            if line is TOO_LONG:
                break
            try:
                parsed.append(parse_request(line))
            except ProtocolError as exc:
                replies.append(exc.reply())
        replies += handler.handle(parsed)
        assert all(_REPLY_RE.match(reply) for reply in replies), replies

    try:
        check()
    finally:
        handler.close()
