"""The web interface's pages and JSON API in process: what each route shows, and to whom."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import re

import pytest

from tests.webutil import add_user, client, login, store_samples
from txm.db import schema
from txm.web.api import CredentialCache

BASE = dt.datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture
def site(settings, database):
    """Units M1 (two channels, labelled, with samples) and M2; a view of both; user ann sees M1 only."""
    m1 = schema.Unit.create(code="M1", key="k", name="Tank <1>", channels=2, labels=["Flow", "Temp"])
    m2 = schema.Unit.create(code="M2", key="k", name="Pump", channels=1)
    store_samples(m1, [(BASE + dt.timedelta(minutes=i), [float(i), 20.0 + i / 10]) for i in range(60)])
    ann = add_user("ann")
    schema.UserUnit.create(user=ann, unit=m1)
    view = schema.View.create(name="Plant <floor>", refresh_seconds=5)
    schema.ViewEntry.create(view=view, unit=m1, channels=[2], position=1)
    schema.ViewEntry.create(view=view, unit=m2, channels=[], position=2)
    return {"M1": m1, "M2": m2, "view": view, "settings": settings}


@pytest.fixture
def ann(site):
    web = client(site["settings"])
    login(web, "ann")
    return web


@pytest.fixture
def boss(site):
    add_user("boss", is_superuser=True, is_staff=True)
    web = client(site["settings"])
    login(web, "boss")
    return web


# --- home ------------------------------------------------------------------------------------


def test_home_lists_only_the_units_a_user_may_see(ann, boss):
    page = ann.get("/")
    assert "/units/M1/" in page and "/units/M1/data.csv" in page and "/units/M2/" not in page
    assert "Tank &lt;1&gt;" in page.text
    assert "Plant &lt;floor&gt;" in page.text and "/views/" in page
    page = boss.get("/")
    assert "/units/M1/" in page and "/units/M2/" in page


# --- unit pages ---------------------------------------------------------------------------------


def test_unit_page_draws_the_graph_and_statistics(ann):
    page = ann.get("/units/M1/")  # default: the last day of data
    assert "60 samples" in page.text
    svgs = re.findall(r"<svg.*?</svg>", page.text, re.S)
    assert len(svgs) == 1 and 'viewBox="0 0 800 400"' in svgs[0]
    assert "<script" not in svgs[0]
    assert "Flow" in svgs[0] and "Temp" in svgs[0]
    stats = page.text.split("<h2>Statistics</h2>", 1)[1]
    row = re.search(r"<td>Flow</td>\s*<td class=\"num\">60</td>\s*<td class=\"num\">0</td>\s*"
                    r"<td class=\"num\">59</td>\s*<td class=\"num\">29.5</td>", stats)
    assert row, stats[:1500]
    assert "2026-03-01 12:00:00" in stats and "2026-03-01 12:59:00" in stats
    assert "reduced-note" not in page.text


def test_unit_page_honours_graph_options(ann, site):
    unit = site["M1"]
    unit.graph_width, unit.graph_height = 640, 300
    unit.graph_axes = [{"label": "Flow <l/s>", "channels": [1]}, {"label": "Heat", "channels": [2]},
                       {"label": "Again", "channels": [2, 99]}]
    unit.save()
    page = ann.get("/units/M1/?range=all")
    svgs = re.findall(r"<svg.*?</svg>", page.text, re.S)
    assert len(svgs) == 2  # two axes on the first chart, the third on a second
    assert all('viewBox="0 0 640 300"' in s for s in svgs)
    assert "Flow &lt;l/s&gt;" in svgs[0] and "right axis: Heat" in svgs[0]
    assert "<l/s>" not in page.text


def test_unit_page_reduces_long_lines_and_says_so(site, settings):
    store_samples(site["M2"], [(BASE + dt.timedelta(seconds=i), [float(i % 97)]) for i in range(3000)])
    add_user("boss", is_superuser=True)
    web = client(settings.replace(MAX_PLOT_POINTS=100))
    login(web, "boss")
    page = web.get("/units/M2/?range=all")
    assert 'id="reduced-note"' in page.text and "3000 samples" in page.text
    assert "minimum and maximum of\n50 equal time slices" in page.text or "50 equal time slices" in page.text


def lines_drawn(page) -> int:
    """Line segments in the page's graphs: pygal breaks a line where a point has no value."""
    svg = "".join(re.findall(r"<svg.*?</svg>", page.text, re.DOTALL))
    return len(re.findall(r'class="line reactive nofill"', svg))


def test_missing_values_are_gaps_nulls_and_empty_fields(site, boss):
    """A sample without a value for a channel (NULL): a gap in the graph, not a line drawn across
    it; null in JSON; an empty CSV field; left out of the statistics."""
    m3 = schema.Unit.create(code="M3", key="k", channels=2, labels=["A", "B"])
    schema.ViewEntry.create(view=site["view"], unit=m3, channels=[], position=3)
    values = [[1.0, 10.0], [2.0, None], [None, None], [None, 40.0], [5.0, 50.0], [6.0, None]]
    store_samples(m3, [(BASE + dt.timedelta(minutes=i), v) for i, v in enumerate(values)])
    page = boss.get("/units/M3/?range=all")
    assert "6 samples" in page.text
    assert lines_drawn(page) == 3  # A: 1-2 and 5-6; B: 40-50 (the lone 10 is a point, no line)
    stats = page.text.split("<h2>Statistics</h2>", 1)[1]
    assert re.search(r"<td>A</td>\s*<td class=\"num\">4</td>\s*<td class=\"num\">1</td>\s*"
                     r"<td class=\"num\">6</td>\s*<td class=\"num\">3.5</td>", stats), stats[:1500]
    api = boss.get("/api/units/M3/samples?range=all").json
    assert [row[1:] for row in api["samples"]] == values
    assert "null" in boss.get("/api/units/M3/samples?range=all").text
    assert boss.get("/api/units/M3/last").json["values"] == [6.0, None]
    entry = boss.get(f"/api/views/{site['view'].id}").json["units"][-1]
    assert [c["value"] for c in entry["channels"]] == [6.0, None]
    assert "M3" in boss.get(f"/views/{site['view'].id}/").text
    rows = list(csv.reader(io.StringIO(boss.get("/units/M3/data.csv?range=all").text)))
    assert [row[1:] for row in rows[1:]] == [["1.0", "10.0"], ["2.0", ""], ["", ""], ["", "40.0"], ["5.0", "50.0"],
                                             ["6.0", ""]]


def test_missing_values_are_gaps_in_reduced_lines_too(site, settings):
    unit = site["M2"]
    store_samples(unit, [(BASE + dt.timedelta(seconds=i), [None if 1000 <= i < 2000 else float(i % 7)])
                         for i in range(3000)])
    add_user("boss", is_superuser=True)
    web = client(settings.replace(MAX_PLOT_POINTS=100))
    login(web, "boss")
    page = web.get("/units/M2/?range=all")
    assert 'id="reduced-note"' in page.text
    assert lines_drawn(page) == 2


@pytest.mark.backends("sqlite", "postgresql")  # MariaDB cannot store an infinity
def test_infinities_stored_by_an_older_txm_are_shown_as_missing(site, boss, settings):
    """txm once stored LoggerNet's INF as an infinity: the pages and the API answer, showing no value."""
    m3 = schema.Unit.create(code="M3", key="k", channels=2)
    inf = float("inf")
    values = [[1.0, 1.0], [2.0, -inf], [inf, 3.0], [4.0, 4.0], [5.0, -inf]]
    store_samples(m3, [(BASE + dt.timedelta(minutes=i), v) for i, v in enumerate(values)])
    page = boss.get("/units/M3/?range=all")
    assert "5 samples" in page.text and lines_drawn(page) == 3  # ch1: 1-2 and 4-5; ch2: 3-4
    api = boss.get("/api/units/M3/samples?range=all").json
    assert [row[1:] for row in api["samples"]] == [[1.0, 1.0], [2.0, None], [None, 3.0], [4.0, 4.0], [5.0, None]]
    assert boss.get("/api/units/M3/last").json["values"] == [5.0, None]


def test_unit_page_empty_range_and_bad_dates(ann):
    page = ann.get("/units/M1/?from=2020-01-01&to=2020-01-02")
    assert "There are no samples of M1 in this range" in page.text and "<svg" not in page.text
    page = ann.get("/units/M1/?from=2026-13-01", status=400)
    assert "is not a real date" in page.text and "Traceback" not in page.text
    page = ann.get("/units/M1/?from=soon", status=400)
    assert "is not a date" in page.text
    assert "unknown range" in ann.get("/units/M1/?range=decade", status=400).text
    page = ann.get("/units/M1/?from=2026-03-01 12:10&to=2026-03-01 12:19")
    assert "10 samples" in page.text


def test_unknown_and_forbidden_units_are_404(ann):
    assert "no unit &#39;NOPE&#39;" in ann.get("/units/NOPE/", status=404).text
    assert "no unit &#39;M2&#39;" in ann.get("/units/M2/", status=404).text  # not ann's: not even its existence
    ann.get("/units/M2/data.csv", status=404)
    assert ann.get("/units/M1", status=301).location.endswith("/units/M1/")


# --- CSV downloads ---------------------------------------------------------------------------------


def test_csv_download_has_labels_the_range_and_a_filename(ann):
    res = ann.get("/units/M1/data.csv?from=2026-03-01 12:00&to=2026-03-01 12:02")
    assert res.content_type == "text/csv"
    assert res.headers["Content-Disposition"] == (
        'attachment; filename="M1_2026-03-01T120000_to_2026-03-01T120259.csv"')
    rows = list(csv.reader(io.StringIO(res.text)))
    assert rows == [["timestamp", "Flow", "Temp"], ["2026-03-01 12:00:00", "0.0", "20.0"],
                    ["2026-03-01 12:01:00", "1.0", "20.1"], ["2026-03-01 12:02:00", "2.0", "20.2"]]
    everything = ann.get("/units/M1/data.csv?range=all")
    assert 'filename="M1_all.csv"' in everything.headers["Content-Disposition"]
    assert len(everything.text.splitlines()) == 61


def test_csv_download_offers_only_the_report_fields(ann, site):
    unit = site["M1"]
    unit.report_fields = [2]
    unit.save()
    rows = list(csv.reader(io.StringIO(ann.get("/units/M1/data.csv?range=all").text)))
    assert rows[0] == ["timestamp", "Temp"] and len(rows) == 61
    assert "not offered for download" in ann.get("/units/M1/data.csv?fields=Flow", status=400).text
    assert "has no field" in ann.get("/units/M1/data.csv?fields=7", status=400).text
    assert ann.get("/units/M1/data.csv?fields=2&range=all").text.startswith("timestamp,Temp\r\n")
    unit.has_reports = False
    unit.save()
    assert "switched off" in ann.get("/units/M1/data.csv", status=403).text
    assert "Download CSV" not in ann.get("/units/M1/").text


def test_csv_bad_dates_are_a_message(ann):
    assert "not a date" in ann.get("/units/M1/data.csv?to=whenever", status=400).text


# --- views ---------------------------------------------------------------------------------------


def test_view_page_shows_newest_values_of_visible_units(ann, boss):
    page = ann.get("/views/%d/" % schema.View.get().id)
    assert "Plant &lt;floor&gt;" in page.text
    assert 'data-unit="M1"' in page.text and 'data-unit="M2"' not in page.text
    assert "25.9" in page.text and "Temp" in page.text and "Flow" not in page.text.split("view-units", 1)[1]
    assert "2026-03-01 12:59:00" in page.text
    page = boss.get("/views/%d/" % schema.View.get().id)
    assert 'data-unit="M2"' in page.text and "no samples yet" in page.text


def test_view_json_marks_stale_units(boss, site):
    view = site["view"]
    data = boss.get(f"/api/views/{view.id}").json
    assert data["refresh_seconds"] == 5 and data["name"] == "Plant <floor>"
    m1, m2 = data["units"]
    assert m1["code"] == "M1" and not m1["stale"] and m1["channels"] == [{"channel": 2, "label": "Temp", "value": pytest.approx(25.9)}]
    assert m2["stale"] and m2["timestamp"] is None
    schema.Sample.update(received=schema.utcnow() - dt.timedelta(hours=1)).execute()
    assert boss.get(f"/api/views/{view.id}").json["units"][0]["stale"] is True


def test_unknown_view_is_404(ann):
    ann.get("/views/999/", status=404)
    assert ann.get("/api/views/999", status=404).json == {"error": "there is no view 999"}


# --- LOGIN_REQUIRED no -------------------------------------------------------------------------------


def test_without_login_required_units_views_and_data_are_public(site):
    web = client(site["settings"].replace(LOGIN_REQUIRED=False))
    assert "/units/M2/" in web.get("/")
    assert "60 samples" in web.get("/units/M1/").text
    assert web.get("/units/M1/data.csv?range=all").text.startswith("timestamp,Flow,Temp")
    assert 'data-unit="M2"' in web.get(f"/views/{site['view'].id}/").text
    assert web.get("/api/units/M1/last").json["values"] == [59.0, 25.9]


# --- the JSON API --------------------------------------------------------------------------------------


def _basic(username: str, password: str) -> dict:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_api_needs_a_login_and_answers_json(site):
    web = client(site["settings"])
    res = web.get("/api/units", status=401)
    assert res.json["error"].startswith("log in first") and res.headers["WWW-Authenticate"].startswith("Basic")
    res = web.get("/api/units", headers=_basic("ann", "wrong"), status=401)
    assert "Wrong user name or password" in res.json["error"]
    res = web.get("/api/units", headers=_basic("ann", "pass word 1"))
    assert res.json == {"units": [{"code": "M1", "name": "Tank <1>", "channels": ["Flow", "Temp"],
                                   "has_reports": True}]}
    assert web.get("/api/units/M2/last", headers=_basic("ann", "pass word 1"), status=404).json["error"]


def test_api_works_with_the_session_too(ann):
    last = ann.get("/api/units/M1/last").json
    assert last["timestamp"] == "2026-03-01 12:59:00" and last["values"] == [59.0, 25.9]
    assert last["channels"] == ["Flow", "Temp"] and last["received"].endswith("Z")


def test_api_samples_pages_follow_next(ann):
    url = "/api/units/M1/samples?range=all&fields=Temp&limit=25"
    seen = []
    pages = 0
    while url:
        page = ann.get(url).json
        assert page["fields"] == ["Temp"]
        seen += page["samples"]
        url = page["next"]
        pages += 1
    assert pages == 3 and len(seen) == 60
    assert seen[0] == ["2026-03-01 12:00:00", 20.0] and seen[-1][0] == "2026-03-01 12:59:00"
    assert ann.get("/api/units/M1/samples?limit=0", status=400).json["error"].startswith("limit must")
    assert ann.get("/api/units/M1/samples?limit=x", status=400).json["error"].startswith("limit must")
    assert "not a date" in ann.get("/api/units/M1/samples?from=later", status=400).json["error"]


def test_year_999_is_zero_padded_on_pages_and_in_the_api_so_paging_reads_it_back(ann, site):
    """Fixed: the pages and the JSON API wrote year 999 as ``999-...``, which no date field reads
    back, so following ``next`` of the API's samples failed with 400 (not a date)."""
    store_samples(site["M1"], [(dt.datetime(999, 1, 1, 0, i), [1.0, 2.0]) for i in range(3)])
    first = ann.get("/api/units/M1/samples?from=0999-01-01&to=0999-01-01&limit=2").json
    assert [s[0] for s in first["samples"]] == ["0999-01-01 00:00:00", "0999-01-01 00:01:00"]
    assert "after=0999-01-01+00%3A01%3A00" in first["next"]
    second = ann.get(first["next"]).json
    assert [s[0] for s in second["samples"]] == ["0999-01-01 00:02:00"] and second["next"] is None
    page = ann.get("/units/M1/?from=0999-01-01&to=0999-01-01")
    assert "0999-01-01 00:00:00 to before 0999-01-02 00:00:00" in page.text  # the range
    assert "3 samples, 0999-01-01 00:00:00 to 0999-01-01 00:02:00" in page.text  # the statistics


def test_api_basic_auth_is_remembered_briefly_but_not_past_a_password_change(site):
    web = client(site["settings"])
    auth = _basic("ann", "pass word 1")
    assert web.get("/api/units", headers=auth).json["units"]
    hashed = schema.User.get(schema.User.username == "ann").password  # upgraded to full strength on first use
    assert web.get("/api/units", headers=auth).json["units"]
    assert schema.User.get(schema.User.username == "ann").password == hashed
    from txm.passwords import make_password

    schema.User.update(password=make_password("changed", iterations=1000)).where(schema.User.username == "ann").execute()
    assert web.get("/api/units", headers=auth, status=401).json["error"].startswith("Wrong")
    schema.User.update(password=make_password("pass word 1", iterations=1000)).where(schema.User.username == "ann").execute()
    assert web.get("/api/units", headers=auth).json["units"]
    schema.User.update(is_active=False).where(schema.User.username == "ann").execute()
    assert web.get("/api/units", headers=auth, status=401).json["error"] == "This account is disabled."


def test_credential_cache_keeps_checked_credentials_for_a_while(site):

    ann = schema.User.get(schema.User.username == "ann")
    cache = CredentialCache(seconds=60)
    assert cache.get("ann", "pass word 1") is None
    cache.put("ann", "pass word 1", ann)
    assert cache.get("ann", "pass word 1").id == ann.id
    assert cache.get("ann", "other") is None and cache.get("Ann", "pass word 1") is None
    expired = CredentialCache(seconds=-1)
    expired.put("ann", "pass word 1", ann)
    assert expired.get("ann", "pass word 1") is None
    schema.User.update(password="pbkdf2_sha256$1$x$y").where(schema.User.id == ann.id).execute()
    assert cache.get("ann", "pass word 1") is None  # the stored hash changed
    small = CredentialCache(size=2)
    for name in ("a", "b", "c"):
        small.put(name, "p", ann)
    assert len(small._entries) <= 2
