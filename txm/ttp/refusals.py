"""How refused requests reach the log without flooding it.

A meter sending garbage, or a scanner trying keys, can make thousands of refusals a second; one
log line each filled 16 MB in 20 s. :class:`RefusalLog` lets through the first refusal of each
kind (the reply code and what it concerns: a unit code, a reason) always, then at most
:data:`LINES_PER_WINDOW` lines per :data:`WINDOW_SECONDS`, and says how many it left out. The
loop also sums up, when a connection closes, how many of its requests were refused.
"""

from __future__ import annotations

import logging
import time

#: Seconds over which refusal lines are counted.
WINDOW_SECONDS = 10.0
#: Refusal lines logged per window beyond each kind's first.
LINES_PER_WINDOW = 50
#: Kinds remembered as seen (first occurrences always logged); forgotten all at once past this.
MAX_KINDS = 10_000
#: A connection that had at least this many requests refused gets a summary line when it closes.
SUMMARY_AT = 10


class RefusalLog:
    """Rate-limited logging of refused requests (see the module docstring)."""

    def __init__(self, log: logging.Logger, clock=time.monotonic):
        self.log = log
        self._clock = clock
        self._seen: set[tuple] = set()
        self._window_end = 0.0
        self._lines = 0
        self._left_out = 0

    def refused(self, kind: tuple, level: int, message: str, *args) -> None:
        """Log a refusal of this ``kind`` unless the window's budget is spent (its first is kept)."""
        if not self.log.isEnabledFor(level):
            return
        now = self._clock()
        if now >= self._window_end:
            self._roll(now)
        first = kind not in self._seen
        if first:
            if len(self._seen) >= MAX_KINDS:
                self._seen.clear()
            self._seen.add(kind)
        elif self._lines >= LINES_PER_WINDOW:
            self._left_out += 1
            return
        self._lines += 1
        self.log.log(level, message, *args)

    def _roll(self, now: float) -> None:
        if self._left_out:
            self.log.warning("%d more refused request(s) left out of the log in the last %.0f s",
                             self._left_out, WINDOW_SECONDS)
        self._window_end = now + WINDOW_SECONDS
        self._lines = self._left_out = 0

    def flush(self) -> None:
        """Say what was left out so far (at stop)."""
        self._roll(self._clock())
