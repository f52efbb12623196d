"""Alarms: what happens after a meter raises one (the ``al`` verb is in :mod:`txm.ttp.verbs`).

* :mod:`txm.alarms.email` -- rendering, sending over SMTP, the email worker of ``txm serve``;
* :mod:`txm.alarms.templates` -- the alarm message templates and their sandbox;
* :mod:`txm.alarms.mailing_lists` -- who receives a unit's alarm emails.
"""
