"""A sample HTTP App: the newest values of every unit you may see, compact for a phone.

Install: copy this file into the ``HTTPApps/`` folder next to the configuration file and
switch it on with a url::

    [httpapps]
    mobile: on
    mobile.url: m/

Then open ``http://<server>:8080/m/``. The page reloads itself every 30 seconds (no JavaScript).
It follows the web interface's rules: with ``LOGIN_REQUIRED`` a visitor logs in first, and
each user sees only their units.
"""

import bottle

from txm.export.stats import is_stale, last_sample
from txm.permissions import visible_units
from txm.webcore import WebCore

PAGE = """{% extends "base.html" %}
{% block title %}Latest values{% endblock %}
{% block head %}<meta http-equiv="refresh" content="30">{% endblock %}
{% block content %}
<h1>Latest values</h1>
{% for unit, sample, stale in rows %}
<section class="card{% if stale %} stale{% endif %}">
  <h2><a href="{{ url('/units/' ~ unit.code ~ '/') }}">{{ unit.code }}</a> <small>{{ unit.name }}</small>
  {% if stale %}<span class="badge stale">stale</span>{% endif %}</h2>
  {% if sample %}
  <table>
    {% for label in unit.channel_labels() %}
    <tr><th>{{ label }}</th><td class="num value">{{ '—' if sample.values[loop.index0] is none else '%g'|format(sample.values[loop.index0]) }}</td></tr>
    {% endfor %}
  </table>
  <p class="note">{{ sample.timestamp|when }}</p>
  {% else %}
  <p class="muted">No samples yet.</p>
  {% endif %}
</section>
{% else %}
<p class="muted">There are no units you may see.</p>
{% endfor %}
{% endblock %}
"""


def make_app(settings):
    app = bottle.Bottle()
    core = WebCore(settings)
    core.install(app, default_access="viewer")

    @app.get("/")
    def latest():
        units = list(visible_units(core.user, settings.LOGIN_REQUIRED))
        rows = []
        for unit in units:
            sample = last_sample(unit)
            rows.append((unit, sample, is_stale(sample, settings.STALE_SECONDS)))
        return core.render_string(PAGE, rows=rows)

    return app
