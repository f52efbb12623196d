"""How refused requests reach the log without flooding it.

A meter sending garbage, or a scanner trying keys, can make thousands of refusals a second; one
log line each filled 16 MB in 20 s. :class:`RefusalLog`, a :class:`txm.logs.RateLimitedLog`, lets
through the first refusal of each kind (the reply code and what it concerns: a unit code, a
reason) always, then at most :data:`LINES_PER_WINDOW` lines per :data:`WINDOW_SECONDS`, and says
how many it left out. The loop also sums up, when a connection closes, how many of its requests
were refused.
"""

from __future__ import annotations

import logging
import time

from txm.logs import RateLimitedLog

#: Seconds over which refusal lines are counted.
WINDOW_SECONDS = 10.0
#: Refusal lines logged per window beyond each kind's first.
LINES_PER_WINDOW = 50
#: Kinds remembered as seen (first occurrences always logged); forgotten all at once past this.
MAX_KINDS = 10_000
#: A connection that had at least this many requests refused gets a summary line when it closes.
SUMMARY_AT = 10


class RefusalLog(RateLimitedLog):
    """Rate-limited logging of refused requests (see the module docstring)."""

    def __init__(self, log: logging.Logger, clock=time.monotonic):
        super().__init__(log, "refused request(s)", WINDOW_SECONDS, LINES_PER_WINDOW, MAX_KINDS, clock)

    def refused(self, kind: tuple, level: int, message: str, *args) -> None:
        """Log a refusal of this ``kind`` unless the window's budget is spent (its first is kept)."""
        self.event(kind, level, message, *args)
