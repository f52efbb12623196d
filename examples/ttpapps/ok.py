"""The sample TTP App: ``TTP /ok/<code>/<anything> <key>`` answers ``OK``.

A meter (or a person with ``txm send-ttp``) uses it to check that the server is reachable and
that the unit's code and key are right, without storing anything: a wrong code answers
``405 Unit Not Found``, a wrong key ``402 Unauthorized``.

Install: copy this file into the ``TTPApps/`` folder next to the configuration file and
switch it on::

    [ttpapps]
    ok: on
"""


def handle(call):
    """Answer ``OK`` once the unit is authenticated."""
    call.unit()  # raises 405 / 402 when the code or key is wrong
    return "OK"
