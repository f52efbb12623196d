"""The web interface (docs/web.md).

* :mod:`txm.web.app` -- the pages: logging in, units, graphs and statistics, CSV downloads, views;
* :mod:`txm.web.api` -- the JSON API;
* :mod:`txm.web.graphs` -- the SVG graphs of a unit page;
* :mod:`txm.web.httpapps` -- HTTP Apps, found and mounted;
* :mod:`txm.web.process` -- the web interface in a child process of ``txm serve``.

Sessions, logins and CSRF, shared with the admin panel and HTTP Apps, are in :mod:`txm.webcore`.
"""
