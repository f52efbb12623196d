"""The JSON API under ``/api/`` (docs/web.md): units, their newest and past samples, views.

The caller is known by HTTP basic auth when sent (checked passwords cached for a minute,
:class:`CredentialCache`) or else by the session, as on the pages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import bottle

from txm.config import Settings
from txm.db import schema
from txm.errors import InvalidValue
from txm.export.csv import resolve_fields
from txm.export.ranges import DateRange, parse_datetime, resolve_range
from txm.export.stats import check_channels, is_stale, last_sample, samples_page
from txm.permissions import visible_unit, visible_units
from txm.timestamps import format_timestamp
from txm.webcore import LoginRefused, WebCore


def requested_range(unit: schema.Unit) -> DateRange:
    """The range a page or API call asks for (``range``, or ``from`` and ``to``)."""
    query = bottle.request.query
    return resolve_range(unit, query.getunicode("range"), query.getunicode("from"),
                         query.getunicode("to"))


def add_api_routes(app: bottle.Bottle, core: WebCore, settings: Settings) -> None:
    """The ``/api/`` routes on the web interface's app."""
    credentials = CredentialCache()

    def api_user() -> schema.User | None:
        """The caller: HTTP basic auth when sent, else the session's user; 401 when needed."""
        auth = bottle.request.auth
        if auth is not None:
            user = credentials.get(auth[0], auth[1])
            if user is not None:
                return user
            try:
                user = core.authenticate(auth[0], auth[1])
            except LoginRefused as exc:
                raise _json_error(401, str(exc), basic=True) from None
            credentials.put(auth[0], auth[1], user)
            return user
        user = core.user
        if user is None and settings.LOGIN_REQUIRED:
            raise _json_error(401, "log in first, or send HTTP basic authentication", basic=True)
        return user

    def api_unit(user: schema.User | None, code: str) -> schema.Unit:
        unit = visible_unit(user, code, settings.LOGIN_REQUIRED)
        if unit is None:
            raise _json_error(404, f"there is no unit {code!r} that you may see")
        return unit

    @app.get("/api/units", access="public")
    def api_units():
        user = api_user()
        return _json({"units": [_unit_json(u) for u in visible_units(user, settings.LOGIN_REQUIRED)]})

    @app.get("/api/units/<code>/last", access="public")
    def api_last(code: str):
        unit = api_unit(api_user(), code)
        sample = last_sample(unit)
        labels = unit.channel_labels()
        body = {"unit": unit.code, "channels": labels, "timestamp": None, "received": None, "values": None}
        if sample is not None:
            body.update(timestamp=format_timestamp(sample.timestamp), received=_utc(sample.received),
                        values=sample.values)
        return _json(body)

    @app.get("/api/units/<code>/samples", access="public")
    def api_samples(code: str):
        unit = api_unit(api_user(), code)
        query = bottle.request.query
        try:
            chosen = requested_range(unit)
            channels = resolve_fields(unit, query.getunicode("fields") or "all")
            after = parse_datetime(query.getunicode("after"), what="after") if query.get("after") else None
            limit = int(query.get("limit") or API_PAGE)
        except InvalidValue as exc:
            raise _json_error(400, str(exc)) from None
        except ValueError:
            raise _json_error(400, f"limit must be a whole number from 1 to {API_PAGE_MAX}") from None
        if not 1 <= limit <= API_PAGE_MAX:
            raise _json_error(400, f"limit must be a whole number from 1 to {API_PAGE_MAX}")
        rows = samples_page(unit, chosen.start, chosen.end, channels, after, limit)
        labels = unit.channel_labels()
        next_url = None
        if len(rows) == limit:
            params = {k: query.getunicode(k) for k in ("range", "from", "to", "fields") if query.get(k)}
            params.update(after=format_timestamp(rows[-1][0]), limit=str(limit))
            next_url = core.url(f"/api/units/{quote(unit.code)}/samples") + "?" + urlencode(params)
        return _json({"unit": unit.code, "fields": [labels[n - 1] for n in channels],
                      "samples": [[format_timestamp(r[0]), *r[1:]] for r in rows], "next": next_url})

    @app.get("/api/views/<view_id:int>", access="public")
    def api_view(view_id: int):
        user = api_user()
        view = schema.View.get_or_none(schema.View.id == view_id)
        if view is None:
            raise _json_error(404, f"there is no view {view_id}")
        return _json(view_data(user, view, settings))


class CredentialCache:
    """Basic-auth credentials checked in the last minute, so a script polling the API does not
    pay a full password hash (a fraction of a second of CPU) on every call.

    Only a SHA-256 of name and password is kept, in this process's memory, with the user's id
    and stored password hash: a changed password, a disabled or deleted user is noticed at once.
    """

    def __init__(self, seconds: float = 60.0, size: int = 256):
        self.seconds = seconds
        self.size = size
        self._entries: dict[bytes, tuple[float, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(username: str, password: str) -> bytes:
        return hashlib.sha256(f"{username}\0{password}".encode("utf-8", "surrogatepass")).digest()

    def get(self, username: str, password: str) -> schema.User | None:
        key = self._key(username, password)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        user = schema.User.get_or_none(schema.User.id == entry[1])
        if user is None or not user.is_active or not hmac.compare_digest(user.password, entry[2]):
            with self._lock:
                self._entries.pop(key, None)
            return None
        return user

    def put(self, username: str, password: str, user: schema.User) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= self.size:
                    self._entries.clear()
            self._entries[self._key(username, password)] = (time.monotonic() + self.seconds, user.id, user.password)


#: Samples per page of ``/api/units/<code>/samples`` unless ``limit`` says otherwise, and the most.
API_PAGE = 1000
API_PAGE_MAX = 10_000


def view_data(user: schema.User | None, view: schema.View, settings: Settings) -> dict[str, Any]:
    """What a multiple-meter view shows now: per unit the user may see, the chosen channels'
    newest values, the sample time and whether the unit is stale."""
    entries = list(schema.ViewEntry.select(schema.ViewEntry, schema.Unit).join(schema.Unit).where(schema.ViewEntry.view == view.id)
                   .order_by(schema.ViewEntry.position, schema.ViewEntry.id))
    visible = {u.id for u in visible_units(user, settings.LOGIN_REQUIRED).where(
        schema.Unit.id.in_([e.unit_id for e in entries]))} if entries else set()
    units = []
    now = schema.utcnow()
    for entry in entries:
        unit = entry.unit
        if unit.id not in visible:
            continue
        labels = unit.channel_labels()
        channels = check_channels(unit, entry.channels or []) or list(range(1, unit.channels + 1))
        sample = last_sample(unit)
        units.append({
            "code": unit.code, "name": unit.name,
            "timestamp": format_timestamp(sample.timestamp) if sample else None,
            "received": _utc(sample.received) if sample else None,
            "stale": is_stale(sample, settings.STALE_SECONDS, now),
            "channels": [{"channel": n, "label": labels[n - 1],
                          "value": sample.values[n - 1] if sample else None} for n in channels],
        })
    return {"id": view.id, "name": view.name, "refresh_seconds": max(1, view.refresh_seconds),
            "stale_seconds": settings.STALE_SECONDS, "now": _utc(now), "units": units}


def _utc(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _unit_json(unit: schema.Unit) -> dict[str, Any]:
    return {"code": unit.code, "name": unit.name, "channels": unit.channel_labels(),
            "has_reports": unit.has_reports}


def _json(body: Any, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(json.dumps(body, allow_nan=False, default=str), status)
    response.content_type = "application/json"
    response.set_header("Cache-Control", "no-store")
    return response


def _json_error(status: int, message: str, basic: bool = False) -> bottle.HTTPResponse:
    response = _json({"error": message}, status)
    if basic:
        response.set_header("WWW-Authenticate", 'Basic realm="txm", charset="UTF-8"')
    return response
