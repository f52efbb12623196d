"""Several txm nodes on one database: each alarm email goes out once.

Two ``txm serve`` processes share the database of the backend under test and one SMTP server.
Alarms wait in the database before both start (so both workers race for them at once), and
more arrive through both nodes while they run.
"""

from __future__ import annotations

import collections
import threading
import time
from contextlib import closing

from tests.conftest import database_values, write_toml
from tests.smtp import SMTPServer
from txm import manage
from txm.alarms.mailing_lists import mailing_list_add
from txm.client import TTPClient
from txm.db import schema
from txm.db.database import open_database

WAITING = 60
PER_NODE = 20


def test_two_nodes_send_each_alarm_email_once(serve_process, settings, config_file):
    manage.syncdb(settings)
    unit = manage.add_unit("M1", "k3y", 1)
    manage.add_user("alice", "pw", email="alice@example.com")
    mailing_list_add("M1", ["alice"])
    now = schema.utcnow()
    with schema.database.atomic():
        for i in range(WAITING):
            schema.Alarm.create(unit=unit, level=1, data=[f"waiting {i}"], received=now)
    schema.database.close()

    with SMTPServer() as smtp:
        write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0,
                                 "BIND_ADDRESS": "127.0.0.1", "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": smtp.port,
                                 "ALARM_EMAIL_RETRY_DELAY": 0.1})
        nodes = [serve_process(), serve_process()]
        ports = [node.wait_ready() for node in nodes]

        def raise_alarms(port: int, name: str) -> None:
            with TTPClient("127.0.0.1", port, timeout=20) as client:
                for i in range(PER_NODE):
                    assert client.request(f"TTP /al/M1/<2;{name} {i}> k3y") == "OK"

        threads = [threading.Thread(target=raise_alarms, args=(port, name)) for port, name in zip(ports, "AB")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        total = WAITING + 2 * PER_NODE
        smtp.wait_for(total, timeout=120)
        with closing(open_database(settings)):
            deadline = time.monotonic() + 60
            while schema.Alarm.select().where(schema.Alarm.email_status != "sent").exists():
                if time.monotonic() > deadline:
                    stuck = [(a.id, a.email_status, a.email_claimed_until, a.email_error)
                             for a in schema.Alarm.select().where(schema.Alarm.email_status != "sent")]
                    raise AssertionError(f"not every alarm was marked sent: {stuck}\n"
                                         + "\n".join(node.logged("WARNING") for node in nodes))
                time.sleep(0.05)
            ids = [a.id for a in schema.Alarm.select(schema.Alarm.id)]
        for node in nodes:
            assert node.stop() == 0
            assert f"Alarm emails through 127.0.0.1:{smtp.port}" in "\n".join(node.lines)
        sent = collections.Counter(m.message["X-Txm-Alarm"] for m in smtp.messages)
    assert len(ids) == total
    assert sent == collections.Counter(str(i) for i in ids), "some alarm was emailed twice or never"
