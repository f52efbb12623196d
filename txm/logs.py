"""Logging for txm's long-running processes: one line per event on standard error (a terminal,
or journald under systemd), with time, level and where it comes from. Never unit keys or
passwords: the code that logs leaves them out.

Refusals reach the log through :class:`RefusalLog`, which cannot be flooded: a meter sending
garbage or a scanner trying keys can make thousands of refusals a second, and one log line each
filled 16 MB in 20 s. The first refusal of each kind (what the server refused and what it
concerns: a reply code and unit code, a reason and client address) is always logged, then at most
``lines_per_window`` lines per ``window_seconds``, and the log says how many it left out."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_stderr(level: int = logging.INFO, loggers: Iterable[str] = ("txm",)) -> None:
    """Send the named loggers (and their children) to standard error at ``level``, replacing
    any handler they had, so that a process set up twice still writes each line once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    for name in loggers:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


#: Seconds over which refusal lines are counted (the TTP server's window).
WINDOW_SECONDS = 10.0
#: Refusal lines logged per window beyond each kind's first (the TTP server's budget).
LINES_PER_WINDOW = 50
#: Kinds remembered as seen (first occurrences always logged); forgotten all at once past this.
MAX_KINDS = 10_000


class RefusalLog:
    """Rate-limited logging of refusals (see the module docstring). ``what`` names the refused
    thing in the line that counts those left out ("request", "Data Export connection")."""

    def __init__(self, log: logging.Logger, window_seconds: float = WINDOW_SECONDS,
                 lines_per_window: int = LINES_PER_WINDOW, what: str = "request", clock=time.monotonic):
        self.log = log
        self.window_seconds = window_seconds
        self.lines_per_window = lines_per_window
        self.what = what
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
        elif self._lines >= self.lines_per_window:
            self._left_out += 1
            return
        self._lines += 1
        self.log.log(level, message, *args)

    def tick(self) -> None:
        """Say how many were left out as soon as their window is over (for a loop that calls it
        on each pass; without it the count comes with the next refusal or :meth:`flush`)."""
        if self._left_out:
            now = self._clock()
            if now >= self._window_end:
                self._roll(now)

    def _roll(self, now: float) -> None:
        if self._left_out:
            self.log.warning("%d more refused %s(s) left out of the log in the last %.0f s",
                             self._left_out, self.what, self.window_seconds)
        self._window_end = now + self.window_seconds
        self._lines = self._left_out = 0

    def flush(self) -> None:
        """Say what was left out so far (at stop)."""
        self._roll(self._clock())
