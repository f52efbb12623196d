"""The TTP handler without sockets: verb table, group commit, savepoints, COMMIT_INTERVAL."""

from __future__ import annotations

import peewee as pw
import pytest

from txm import manage
from txm.db import schema
from txm.db.database import make_database
from txm.db.sqlite import SQLITE_CHECKPOINT_PAGES
from txm.ttp.handler import Handler, keys_match
from txm.ttp.parser import ProtocolError, parse_request
from txm.ttp.verbs import BUILTIN_VERBS, upload


def other_connection_count(settings, code: str) -> int:
    """Samples of a unit as a second, independent connection sees them (committed only)."""
    other = make_database(settings)
    with other.connection_context():
        cursor = other.execute_sql(
            "SELECT COUNT(*) FROM sample JOIN unit ON unit.id = sample.unit_id WHERE unit.code = %s"
            .replace("%s", "?" if isinstance(other, pw.SqliteDatabase) else "%s"), (code,))
        return cursor.fetchone()[0]


def requests(*lines: str):
    return [parse_request(line.encode()) for line in lines]


@pytest.fixture
def units(database):
    manage.add_unit("A", "ka", 1)
    manage.add_unit("B", "kb", 2)
    return database


@pytest.fixture
def make_handler():
    """``make_handler(settings, database, extra_verbs, **settings_values)``: an opened handler with the
    built-in verbs and ``extra_verbs``; every one made is closed (and so flushed) at the end of the test."""
    made: list[Handler] = []

    def make(settings, database, extra=None, **values) -> Handler:
        handler = Handler(settings.replace(**values) if values else settings, database,
                          {**BUILTIN_VERBS, **(extra or {})})
        made.append(handler)
        handler.open()
        return handler

    yield make
    for handler in made:
        handler.close()


def test_keys_match_is_exact():
    assert keys_match("s3cret", "s3cret")
    assert not keys_match("s3cret", "S3CRET") and not keys_match("", "x") and not keys_match("x", "")
    assert keys_match("clé", "clé")


def test_one_pass_answers_in_order_and_is_committed_before_it_returns(settings, units, make_handler):
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


def test_a_failing_verb_leaves_nothing_and_harms_no_other_request(settings, units, make_handler):
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


def test_after_commit_runs_once_committed(settings, units, make_handler):
    seen = []

    def verb(call):
        call.unit()
        call.after_commit(lambda: seen.append(other_connection_count(settings, "A")))
        call.store.insert_samples(call.unit(), [(call.received, (1.0,))], call.received)
        return "OK"

    handler = make_handler(settings, units, {"mark": verb})
    assert handler.handle(requests("TTP /mark/A/x ka")) == ["OK"]
    assert seen == [1]


def test_the_same_instant_sent_in_any_form_is_one_sample(settings, units, make_handler):
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
    with units.bind_ctx([schema.Sample]):
        stored = sorted(str(s.timestamp) for s in schema.Sample.select())
    assert stored == ["2020-01-01 00:00:00", "2020-01-01 00:00:01.500000", "2020-01-01 00:00:02",
                      "2020-01-01 00:00:03", "2020-01-01 00:00:04"]


def test_commit_interval_commits_every_n_writes_and_on_flush(settings, units, make_handler):
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


def test_unit_changes_apply_to_the_next_pass(settings, units, make_handler):
    handler = make_handler(settings, units)
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka")) == ["OK"]
    other = make_database(settings)  # as the admin panel or txm unit would: another connection
    with other.connection_context(), other.bind_ctx([schema.Unit]):
        schema.Unit.update(key="new", channels=2).where(schema.Unit.code == "A").execute()
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1;2> ka")) == ["402 Unauthorized"]
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1> new")) == ["400 Bad request"]
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:1;1;2> new")) == ["OK"]


def test_a_verb_returning_no_text_is_500_and_line_breaks_never_split_a_reply(settings, units, make_handler):
    handler = make_handler(settings, units, {"none": lambda call: None, "two": lambda call: "OK a\rb\nc"})
    assert handler.handle(requests("TTP /none/A/x ka", "TTP /two/A/x ka", "TTP /dl/A/last ka")) == [
        "500 Internal error", "OK a b c", "404 Data Not found"]


_REPLY_RE = __import__("re").compile(r"(OK( [^\r\n]*)?|(400|402|404|405|406|500|501) [^\r\n]+)\Z")


def test_random_request_lines_always_get_a_protocol_reply(settings, units, make_handler):
    """Bytes in, whatever they are: every complete line gets exactly one well-formed reply."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    from txm.framing import TOO_LONG, Framer

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

    check()


# --- one-sample uploads of a pass go in together ---------------------------------------------


@pytest.fixture
def three_units(database):
    manage.add_unit("A", "ka", 1)
    manage.add_unit("B", "kb", 2)
    manage.add_unit("C", "kc", 3)
    return database


def stored_samples(database) -> list[tuple]:
    with database.bind_ctx([schema.Sample, schema.Unit]):
        rows = (schema.Sample.select(schema.Unit.code, schema.Sample.timestamp, schema.Sample.ch1,
                                     schema.Sample.ch2, schema.Sample.ch3, schema.Sample.ch4)
                .join(schema.Unit).tuples())
        return sorted((code, str(ts), *values) for code, ts, *values in rows)


def without_ids(replies: list[str]) -> list[str]:
    """Download replies start with the sample's id, which differs between two runs."""
    import re
    return [re.sub(r"^OK <\d+ ", "OK <id ", reply) for reply in replies]


def test_batched_uploads_answer_and_store_exactly_as_one_at_a_time(settings, three_units, make_handler):
    """The upload verb's batch path against the same verb without it, on random passes: the
    same replies (OK, 400, 402, 405, 406 with positions) and the same rows."""
    from hypothesis import HealthCheck, example, given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st


    channels = {"A": 1, "B": 2, "C": 3, "X": 1}
    keys = {"A": "ka", "B": "kb", "C": "kc", "X": "kx"}

    @st.composite
    def request_line(draw) -> str:
        code = draw(st.sampled_from("AABBCCX"))
        key = keys[code] if draw(st.integers(0, 9)) else "wrong"
        if draw(st.integers(0, 7)) == 0:
            return f"TTP /dl/{code}/last {key}"
        samples = []
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
            second = draw(st.integers(0, 3))  # few instants: duplicates happen
            stamp = draw(st.sampled_from([f"2020-01-01 00:00:0{second}", f"2020-1-1 0:0:{second}"]))
            width = channels[code] + (1 if draw(st.integers(0, 15)) == 0 else 0)  # now and then one too many
            values = [str(draw(st.sampled_from([1, -2.5, 3e2, 0]))) for _ in range(width)]
            samples.append(f"<{stamp};{';'.join(values)}>")
        return f"TTP /up/{code}/{''.join(samples)} {key}"

    batched = make_handler(settings, three_units)
    alone = make_handler(settings, three_units, {"up": lambda call: upload(call)})  # no ttp_batch

    used, failed = [], []
    original = batched.store.insert_one_each

    def watched(samples, received):  # the batch path must really be taken, and never fail
        try:
            result = original(samples, received)
        except Exception as exc:
            failed.append(exc)
            raise
        used.append(len(samples))
        return result

    batched.store.insert_one_each = watched

    def run(handler, lines):
        replies = without_ids(handler.handle(requests(*lines)))
        rows = stored_samples(three_units)
        with three_units.bind_ctx([schema.Sample]):
            schema.Sample.delete().execute()
        return replies, rows

    @hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(request_line(), min_size=1, max_size=25))
    # one-sample uploads of different units in a row: the batch path, whatever the random draws
    @example(["TTP /up/A/<2020-01-01 00:00:01;1> ka", "TTP /up/B/<2020-1-1 0:0:1;1;2> kb",
              "TTP /up/C/<2020-01-01 00:00:02;1;-2.5;0> kc", "TTP /up/A/<2020-01-01 00:00:01;3> ka"])
    def check(lines):
        assert run(batched, lines) == run(alone, lines)

    check()
    assert not failed, failed
    assert any(size > 1 for size in used)


def test_a_batch_of_one_sample_uploads_is_one_insert_per_pass(settings, three_units, make_handler):
    handler = make_handler(settings, three_units)
    lines = ["TTP /up/A/<2020-1-1 0:0:0;1> ka", "TTP /up/B/<2020-1-1 0:0:0;1;2> kb",
             "TTP /up/C/<2020-1-1 0:0:0;1;2;3> kc", "TTP /up/A/<2020-1-1 0:0:1;1> ka",
             "TTP /up/B/<2020-1-1 0:0:0;1;2> kb", "TTP /dl/B/last kb"]
    seen: list[str] = []
    original = handler.store.insert_one_each

    def counting(samples, received):
        result = original(samples, received)
        seen.append(",".join(unit.code for unit, _, _, _ in samples))  # only once it worked
        return result

    handler.store.insert_one_each = counting
    replies = handler.handle(requests(*lines))
    assert without_ids(replies) == ["OK", "OK", "OK", "OK", "406 Duplicate sample 1<2020-1-1 0:0:0>",
                                    "OK <id 2020-01-01 00:00:00 1 2>"]
    # A unit that comes again starts the next batch; a download is not batched.
    assert seen == ["A,B,C", "A,B"]
    assert other_connection_count(settings, "A") == 2


def test_a_failing_batch_keeps_nothing_and_each_request_is_answered_alone(settings, three_units, make_handler):

    def flaky(call):
        return upload(call)

    def batch_that_fails(calls):
        for call in calls:  # writes, then fails: none of it may stay
            call.store.insert_samples(call.unit(), [(call.received.replace(year=2001), (5.0,) * 3)],
                                      call.received)
        raise RuntimeError("bug in the batch")

    flaky.ttp_batch = batch_that_fails
    handler = make_handler(settings, three_units, {"up": flaky})
    replies = handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka", "TTP /up/B/<2020-1-1 0:0:0;1;2> wrong",
                                      "TTP /up/C/<2020-1-1 0:0:0;1;2;3> kc"))
    assert replies == ["OK", "402 Unauthorized", "OK"]
    assert stored_samples(three_units) == [("A", "2020-01-01 00:00:00", 1.0, None, None, None),
                                           ("C", "2020-01-01 00:00:00", 1.0, 2.0, 3.0, None)]


def test_the_sqlite_loop_connection_checkpoints_its_wal_less_often(tmp_path, make_handler):
    """Also after the handler had to reconnect (a failed pass closes the connection)."""
    from tests.conftest import write_toml
    from txm import config

    sqlite = config.read_settings(write_toml(tmp_path / "txm.toml", {"DATABASE_NAME": str(tmp_path / "t.db")}))
    database = manage.syncdb(sqlite).database
    database.close()
    handler = make_handler(sqlite, database)
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == SQLITE_CHECKPOINT_PAGES
    handler._abandon()
    assert handler.handle(requests("TTP /dl/A/last ka")) == ["405 Unit Not Found"]
    assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == SQLITE_CHECKPOINT_PAGES


def test_the_sqlite_checkpointer_copies_the_wal_after_commits_and_stops_with_the_handler(tmp_path, make_handler):
    import threading
    import time

    from tests.conftest import write_toml
    from txm import config

    sqlite = config.read_settings(write_toml(tmp_path / "txm.toml", {"DATABASE_NAME": str(tmp_path / "t.db")}))
    database = manage.syncdb(sqlite).database
    manage.add_unit("A", "ka", 1)
    database.close()
    handler = make_handler(sqlite, database)
    checkpointer = handler.checkpointer
    assert checkpointer is not None and checkpointer.runs == 0
    time.sleep(0.3)
    assert checkpointer.runs == 0  # nothing committed: nothing to do
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka")) == ["OK"]
    deadline = time.monotonic() + 10
    while checkpointer.runs == 0:
        assert time.monotonic() < deadline, "the checkpointer never ran"
        time.sleep(0.02)
    runs = checkpointer.runs
    time.sleep(0.3)
    assert checkpointer.runs == runs  # once per commit at most, not on a timer
    handler.close()
    assert handler.checkpointer is None
    assert "txm-checkpoint" not in [thread.name for thread in threading.enumerate()]


def test_the_batch_interface_as_docs_apps_shows_it(settings, three_units, make_handler):
    """docs/apps.md's ``ttp_batch`` example, run: each call of a batch answered on its own."""
    import re

    from tests.conftest import REPO

    text = REPO.joinpath("docs", "apps.md").read_text()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "ttp_batch" in block]
    app: dict = {}
    exec("def handle(call):\n    call.unit()\n    return 'OK'\n" + example, app)
    batches: list[int] = []
    original = app["handle"].ttp_batch
    app["handle"].ttp_batch = lambda calls: batches.append(len(calls)) or original(calls)
    handler = make_handler(settings, three_units, {"ping": app["handle"]})
    replies = handler.handle(requests("TTP /ping/A/x ka", "TTP /ping/B/x wrong", "TTP /ping/X/x kx",
                                      "TTP /ping/C/x kc", "TTP /ping/A/x ka"))
    assert replies == ["OK", "402 Unauthorized", "405 Unit Not Found", "OK", "OK"]
    assert batches == [4]  # A comes again: the fifth call is answered alone


def test_a_failing_single_statement_call_costs_only_its_own_request(settings, units, make_handler):
    """Such a call runs without a savepoint of its own; on PostgreSQL its failure aborts the
    transaction, so the pass is answered again one request at a time: the others' samples are
    stored all the same, each answered once."""
    def broken(call):
        call.unit()
        call.db.execute_sql("SELECT no_such_column FROM unit")
        return "OK"

    broken.ttp_single_statement = True
    handler = make_handler(settings, units, {"bad": broken})
    replies = handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka", "TTP /up/A/<2020-1-1 0:0:1;1> ka",
                                      "TTP /bad/A/x ka", "TTP /up/B/<2020-1-1 0:0:0;1;2> kb",
                                      "TTP /up/B/<2020-1-1 0:0:0;1;2> kb"))
    assert replies == ["OK", "OK", "500 Internal error", "OK", "406 Duplicate sample 1<2020-1-1 0:0:0>"]
    assert other_connection_count(settings, "A") == 2 and other_connection_count(settings, "B") == 1
    # The next pass goes the quick way again.
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:2;1> ka")) == ["OK"]
    assert other_connection_count(settings, "A") == 3


def test_a_failing_single_statement_call_with_commit_interval_loses_no_answered_upload(settings, units, make_handler):
    """COMMIT_INTERVAL > 1: uploads answered OK in earlier passes are still uncommitted when the
    failure rolls the transaction back; they are written again."""
    def broken(call):
        call.db.execute_sql("SELECT no_such_column FROM unit")
        return "OK"

    broken.ttp_single_statement = True
    handler = make_handler(settings, units, {"bad": broken}, COMMIT_INTERVAL=100)
    assert handler.handle(requests("TTP /up/A/<2020-1-1 0:0:0;1> ka")) == ["OK"]
    assert handler.handle(requests("TTP /up/B/<2020-1-1 0:0:0;1;2> kb", "TTP /bad/A/x ka")) == [
        "OK", "500 Internal error"]
    handler.flush()
    assert other_connection_count(settings, "A") == 1 and other_connection_count(settings, "B") == 1
