"""Logging for txm's long-running processes: one line per event on standard error (a terminal,
or journald under systemd), with time, level and where it comes from. Never unit keys or
passwords: the code that logs leaves them out."""

from __future__ import annotations

import logging
import sys
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
