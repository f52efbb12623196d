"""The Administration Control Panel: its own Bottle app, which the web interface mounts at ``/admin/``.

:func:`make_app` builds it (:mod:`txm.admin.app`); the rest works without HTTP:

* :mod:`txm.admin.actor` -- who acts, their permissions, the action log they write;
* :mod:`txm.admin.forms` -- form fields and the generic checks on what was typed;
* :mod:`txm.admin.base` -- :class:`~txm.admin.base.ModelAdmin`, the list/form/change/delete machinery;
* :mod:`txm.admin.people` -- users, groups and permissions;
* :mod:`txm.admin.meters` -- units, mailing lists, alarm messages, multiple-meter views;
* :mod:`txm.admin.records` -- samples, alarms and the action log: paged, viewed, deleted in batches;
* :mod:`txm.admin.registry` -- every managed model by URL name, and the index page's sections.
"""

from txm.admin.app import make_app

__all__ = ["make_app"]
