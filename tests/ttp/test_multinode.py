"""Several txm nodes on one database: every OK sample stored once, every duplicate answered 406.

Two ``txm serve`` processes share the database of the backend under test (PostgreSQL and
MariaDB when selected; SQLite too, where two processes share one file). Meters upload through
both at once, and the same samples go to both nodes at the same moment.
"""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import closing

from tests.conftest import database_values, write_toml
from txm import manage
from txm.client import TTPClient
from txm.db import schema
from txm.db.database import open_database

BASE = dt.datetime(2026, 11, 20, 8, 0, 0)
ONLY_A = range(0, 120)
BOTH = range(120, 360)
ONLY_B = range(360, 480)
PAIRS = 4


def stamp(i: int) -> str:
    ts = BASE + dt.timedelta(seconds=i, microseconds=i % 7)
    return f"{ts:%Y-%m-%d %H:%M:%S}.{ts.microsecond:06d}"


def test_two_nodes_store_each_sample_once(serve_process, settings, config_file):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0,
                             "BIND_ADDRESS": "127.0.0.1"})
    manage.syncdb(settings)
    manage.add_unit("M1", "k3y", 2)
    schema.database.close()
    node_a, node_b = serve_process(), serve_process()
    ports = {"A": node_a.wait_ready(), "B": node_b.wait_ready()}

    replies: dict[tuple[str, int], str] = {}
    lock = threading.Lock()

    def upload(node: str, client: TTPClient, i: int) -> None:
        # The value tells which node the stored sample came through.
        reply = client.request(f"TTP /up/M1/<{stamp(i)};{i};{1 if node == 'A' else 2}> k3y")
        with lock:
            replies[(node, i)] = reply

    def alone(node: str, indexes: range) -> None:
        with TTPClient("127.0.0.1", ports[node], timeout=20) as client:
            for i in indexes:
                upload(node, client, i)

    def pair(node: str, k: int, barrier: threading.Barrier) -> None:
        with TTPClient("127.0.0.1", ports[node], timeout=20) as client:
            for i in BOTH[k::PAIRS]:
                barrier.wait(timeout=20)  # both nodes get sample i at the same moment
                upload(node, client, i)

    threads = [threading.Thread(target=alone, args=("A", ONLY_A)),
               threading.Thread(target=alone, args=("B", ONLY_B))]
    for k in range(PAIRS):
        barrier = threading.Barrier(2)
        threads += [threading.Thread(target=pair, args=(node, k, barrier)) for node in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "uploads did not finish"

    # Every sample sent to both: exactly one OK and one 406 naming it.
    for i in BOTH:
        answers = sorted([replies[("A", i)], replies[("B", i)]])
        assert answers == ["406 Duplicate sample 1<" + stamp(i) + ">", "OK"], (i, answers)
    for node, indexes in (("A", ONLY_A), ("B", ONLY_B)):
        assert all(replies[(node, i)] == "OK" for i in indexes)

    with closing(open_database(settings)):
        rows = list(schema.Sample.select(schema.Sample.timestamp, schema.Sample.ch1, schema.Sample.ch2)
                    .order_by(schema.Sample.timestamp).tuples())
    assert len(rows) == len(ONLY_A) + len(BOTH) + len(ONLY_B)
    for ts, ch1, ch2 in rows:
        i = int(ch1)
        assert ts == BASE + dt.timedelta(seconds=i, microseconds=i % 7)
        # the stored copy is the one whose node answered OK
        ok_node = "A" if replies.get(("A", i)) == "OK" else "B"
        assert ch2 == (1 if ok_node == "A" else 2), (i, ok_node, ch2)
    # both nodes took part in the shared samples
    winners = {("A" if replies[("A", i)] == "OK" else "B") for i in BOTH}
    assert node_a.stop() == 0 and node_b.stop() == 0
    assert winners, "no shared sample was stored"
