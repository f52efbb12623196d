"""Logging for txm's long-running processes: one line per event on standard error (a terminal,
or journald under systemd), with time, level and where it comes from. Never unit keys or
passwords: the code that logs leaves them out.

Events that can come thousands a second reach the log through :class:`RateLimitedLog`: a meter
sending garbage or a scanner trying keys made 214,000 lines (16 MB) in 20 s when each refusal had
its own line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Iterable

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


#: Seconds over which a :class:`RateLimitedLog` counts its lines (the TTP server's refusals).
WINDOW_SECONDS = 10.0
#: Lines logged per window beyond each kind's first.
LINES_PER_WINDOW = 50
#: Kinds remembered as seen (first occurrences always logged); forgotten all at once past this.
MAX_KINDS = 10_000


class RateLimitedLog:
    """Logging of events that can come thousands a second (refused TTP requests, quarantined
    LoggerNet records) without flooding the log: the first event of each kind always, then at
    most ``lines_per_window`` lines per ``window_seconds``, and one line saying how many were
    left out. Kinds seen are remembered up to ``max_kinds``, then forgotten all at once."""

    def __init__(self, log: logging.Logger, what: str, window_seconds: float = WINDOW_SECONDS,
                 lines_per_window: int = LINES_PER_WINDOW, max_kinds: int = MAX_KINDS,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.what = what  # "refused request(s)": what the left-out line counts
        self.window_seconds = window_seconds
        self.lines_per_window = lines_per_window
        self.max_kinds = max_kinds
        self._clock = clock
        self._seen: set[tuple] = set()
        self._window_end = 0.0
        self._lines = 0
        self._left_out = 0

    def event(self, kind: tuple, level: int, message: str, *args) -> None:
        """Log an event of this ``kind`` unless the window's budget is spent (its first is kept)."""
        if not self.log.isEnabledFor(level):
            return
        now = self._clock()
        if now >= self._window_end:
            self._roll(now)
        first = kind not in self._seen
        if first:
            if len(self._seen) >= self.max_kinds:
                self._seen.clear()
            self._seen.add(kind)
        elif self._lines >= self.lines_per_window:
            self._left_out += 1
            return
        self._lines += 1
        self.log.log(level, message, *args, stacklevel=2)

    def tick(self) -> None:
        """Say how many were left out as soon as their window is over (for a loop that calls it
        on each pass; without it the count comes with the next event or :meth:`flush`)."""
        if self._left_out:
            now = self._clock()
            if now >= self._window_end:
                self._roll(now)

    def _roll(self, now: float) -> None:
        if self._left_out:
            self.log.warning("%d more %s left out of the log in the last %.0f s", self._left_out, self.what,
                             self.window_seconds)
        self._window_end = now + self.window_seconds
        self._lines = self._left_out = 0

    def flush(self) -> None:
        """Say what was left out so far (at stop)."""
        self._roll(self._clock())
