"""Alarm emails in the admin panel: the backlog of emails not sent yet (shown on the index and the
alarm list), and sending failed ones again (an action on the alarm pages, ``change_alarm``)."""

from __future__ import annotations

from typing import Any, Sequence

from txm.admin.actor import Actor, log_action
from txm.admin.records import ALARMS, selected_ids
from txm.alarms.email import describe_seconds, email_backlog, send_again
from txm.db import schema
from txm.db.sqlite import write_transaction


def backlog_context() -> dict[str, Any]:
    """What the pages show of the backlog: ``backlog`` and how long ago the oldest arrived."""
    backlog = email_backlog()
    age = ""
    if backlog.oldest is not None:
        age = describe_seconds(max(0.0, (schema.utcnow() - backlog.oldest.received).total_seconds()))
    return {"backlog": backlog, "backlog_age": age}


def send_alarm_emails_again(actor: Actor, ids: Sequence[Any]) -> int:
    """The "send again" action: the failed emails among these alarms become pending (the email
    worker tries each at its next look); one log entry each. Returns how many."""
    actor.require("change", "alarm")
    numbers = selected_ids(ids)
    with write_transaction():
        alarms = send_again(numbers)
        for alarm in alarms:
            log_action(actor, "change", "alarm", alarm.id, ALARMS.describe(alarm),
                       f"Email to be sent again (it had failed: {alarm.email_error or 'no reason recorded'}).")
    return len(alarms)
