"""A ``txm serve`` process and its group as /proc shows them, and the check that it stopped cleanly:
within :data:`STOP_SECONDS`, exit 0, no traceback, its ports free and no process of the group left."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

#: The longest a stop may take, from the signal to the last process of the group gone.
STOP_SECONDS = 10.0


# --- processes, as /proc shows them ------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent has yet to reap it
        return None
    return int(fields[1]), int(fields[2])


def _processes() -> dict[int, tuple[int, int]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                found[int(entry)] = stat
    return found


def group_members(pgid: int) -> list[int]:
    return [pid for pid, (_, group) in _processes().items() if group == pgid]


def children(pid: int) -> list[int]:
    return [child for child, (parent, _) in _processes().items() if parent == pid]


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for the signal (``SigCgt`` in /proc/PID/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def wait_for(predicate, timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def refused(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# --- a stop, checked ---------------------------------------------------------------------------


def assert_stopped_cleanly(process, since: float, ports: tuple[int, ...] = ()) -> None:
    """The main process exited 0 within STOP_SECONDS of ``since``, with its whole group gone, its
    ports free, no traceback and no web process started during the stop."""
    pgid = process.proc.pid
    try:
        code = process.proc.wait(max(0.1, since + STOP_SECONDS - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"txm serve did not stop within {STOP_SECONDS} s; it logged:\n{process.logged()}")
    assert wait_for(lambda: not group_members(pgid), max(0.1, since + STOP_SECONDS - time.monotonic())), (
        f"processes left behind: {group_members(pgid)}")
    time.sleep(0.2)  # the reader threads take the last lines
    output = "\n".join(process.lines) + "\n" + process.logged()
    assert code == 0, output
    assert "Traceback" not in output and not process.logged("ERROR"), output
    assert "starting it again" not in output, output
    assert process.lines[-1] == "Stopped.", output
    for port in ports:
        assert refused(port), f"port {port} is still open"
