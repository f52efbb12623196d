"""Helpers for in-process tests of txm's web apps (the web interface, the admin panel, HTTP Apps).

``client(settings)`` wraps ``txm.serve.make_site`` (the whole site) in a :class:`webtest.TestApp` that keeps cookies,
so a test logs in once and then browses; ``login`` goes through the real login form (with its
CSRF token); ``add_user`` creates a user with a password hashed cheaply, so tests stay fast
(the login upgrades such a hash, as it does legacy ones).
"""

from __future__ import annotations

import re

import webtest

from txm.db import schema
from txm.passwords import make_password
from txm.serve import make_site

#: Iterations for test users' hashes: logging in re-hashes them at full strength once.
TEST_ITERATIONS = 1000


def client(settings, app=None, address: str = "192.0.2.10") -> webtest.TestApp:

    return webtest.TestApp(app or make_site(settings), extra_environ={"REMOTE_ADDR": address})


def add_user(username: str, password: str = "pass word 1", **fields) -> schema.User:
    return schema.User.create(username=username, password=make_password(password, iterations=TEST_ITERATIONS),
                              **fields)


def csrf_token(response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(app: webtest.TestApp, username: str, password: str = "pass word 1", next: str = "/", status=303):
    """Log in through the form; returns the response to the POST."""
    form = app.get("/login", params={"next": next})
    return app.post("/login", {"username": username, "password": password, "next": next,
                               "csrf_token": csrf_token(form)}, status=status)


def store_samples(unit: schema.Unit, rows) -> None:
    """Insert samples directly: rows of (timestamp, [value per channel])."""
    batch = []
    for when, values in rows:
        row = {"unit": unit.id, "timestamp": when, "received": schema.utcnow()}
        row.update({f"ch{i + 1}": v for i, v in enumerate(values)})
        batch.append(row)
    with schema.database.atomic():
        for i in range(0, len(batch), 500):
            schema.Sample.insert_many(batch[i:i + 500]).execute()
