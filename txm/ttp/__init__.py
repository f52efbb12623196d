"""The TTP server in three layers: :mod:`~txm.ttp.parser` (bytes to requests),
:mod:`~txm.ttp.loop` (the selectors loop) and :mod:`~txm.ttp.handler` (the pass runner, group
commit), with the built-in verbs in :mod:`~txm.ttp.verbs`; :mod:`~txm.ttp.apps` finds TTP Apps.
Refused requests reach the log through :class:`txm.logs.RateLimitedLog`. :mod:`txm.serve` puts
them together."""

from txm.ttp.handler import Call, Handler, keys_match
from txm.ttp.parser import ProtocolError, Request

__all__ = ["Call", "Handler", "ProtocolError", "Request", "keys_match"]
