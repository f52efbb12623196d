"""The admin panel's routes and records, for the tests that walk every route (permissions, takeovers)."""

from __future__ import annotations

from tests.samples import add_samples
from tests.webutil import add_user
from txm.db import schema

A = "/admin"


def admin_routes(app, ids: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    """Every route of the panel, from the app's own route table, as (method, path) per model.

    A generic rule (``/admin/<model>/<obj_id>/``) stands for each model edited through forms;
    ``<obj_id>`` becomes the id of an existing record of that model.
    """
    from txm.admin.registry import FORM_MODELS

    walked: dict[str, list[tuple[str, str]]] = {model: [] for model in ids}
    rules = [(route.method, route.rule) for route in app.routes if route.rule.startswith(A + "/")]
    assert len(rules) > 20, rules
    for method, rule in rules:
        if rule == A + "/":
            continue
        head = rule[len(A) + 1:].split("/", 1)[0]
        models = FORM_MODELS if head == "<model>" else [head]
        for model in models:
            path = rule[len(A):].replace("<model>", model).replace("<obj_id>", str(ids[model]))
            if "delete-all" in path or ("/sample/" == path and method == "GET"):
                path += "?unit=M1"
            walked[model].append((method, path))
    return walked


def objects_of_every_model() -> dict[str, int]:
    unit = schema.Unit.create(code="M1", key="k1", channels=3, name="Mill")
    add_samples(unit, 3)
    alarm = schema.Alarm.create(unit=unit, level=1, data=["x"])
    user = add_user("someone", email="s@example.com")
    group = schema.Group.create(name="G")
    ml = schema.MailingList.create(unit=unit)
    msg = schema.AlarmMessage.create(unit=unit, level=1, subject="s", body="b")
    view = schema.View.create(name="V")
    entry = schema.LogEntry.create(username="x", action="add", model="unit", object_id=str(unit.id), object_repr="M1")
    quarantined = schema.QuarantinedRecord.create(station="Lgr", table_name="T", record_number="1", reason="r",
                                                  acknowledged=True, digest="0" * 64, raw='"Lgr","T"')
    return {"unit": unit.id, "sample": schema.Sample.select().first().id, "alarm": alarm.id, "user": user.id,
            "group": group.id, "mailinglist": ml.id, "alarmmessage": msg.id, "view": view.id,
            "logentry": entry.id, "quarantinedrecord": quarantined.id}


def snapshot_database() -> dict:
    return {model.__name__: sorted(tuple(sorted((k, str(v)) for k, v in row.items()))
                                   for row in model.select().dicts())
            for model in (schema.Unit, schema.Sample, schema.Alarm, schema.User, schema.Group, schema.MailingList, schema.AlarmMessage, schema.View,
                          schema.ViewEntry, schema.UserPermission, schema.GroupPermission, schema.QuarantinedRecord)}
