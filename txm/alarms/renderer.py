"""The process alarm templates are rendered in: a child of the process that asks, with an
address-space limit and a wall-clock kill, so that no template can take that process's memory
or time.

The sandbox (:mod:`txm.alarms.templates`) refuses the operations it knows to be dangerous and
stops a template whose Python code runs too long; but it cannot see everything (a thousand
values of 100,000 characters each, kept in one list) and cannot interrupt a single C call
(``sum`` of a long list of lists runs for seconds holding the GIL, and every thread of
``txm serve``, the TTP loop too, would wait for it). Here the rendering runs in a process of its
own instead:

* its address space is limited to :data:`RENDER_MEMORY_BYTES` (``RLIMIT_AS``): a template that
  needs more fails with ``MemoryError`` there, and the process is replaced;
* the asking thread waits at most :data:`RENDER_KILL_SECONDS` for the answer; then the process
  is killed (SIGKILL) and a new one started for the next render.

One :class:`TemplateProcess` is reused for render after render (starting Python and Jinja2
takes a tenth of a second or more; a render through it a millisecond or so) and serves one
render at a time. Each process that renders (``txm serve`` for its email worker, the web
process for the admin panel's previews and test emails) has its own, started at its first
render: see :func:`default_process`. The child is ``python -m txm.alarms.renderer``; it
speaks one JSON object per line on its standard input and output, and ends when its input
closes (the parent closed it, or died).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - not a Unix system: the wall-clock kill still holds
    resource = None  # type: ignore[assignment]

from txm.errors import InvalidValue

#: Address space of the rendering process, in bytes: Python and Jinja2 take about 30 MB of it.
RENDER_MEMORY_BYTES = 256 * 2 ** 20
#: Seconds a render may take, counted by the asking thread, before the process is killed. The
#: sandbox's own limit (``templates.RENDER_SECONDS``, 2 s) stops Python code earlier with a
#: clearer message; this one stops a C call it cannot interrupt.
RENDER_KILL_SECONDS = 3.0
#: Seconds the rendering process may take to start (Python, Jinja2) on a busy machine.
START_SECONDS = 30.0

_READ_CHUNK = 1 << 16


class TemplateProcess:
    """A rendering process, reused; a new one replaces it after a kill or a crash.

    :meth:`render` sends a job (the subject and body templates and their context) and returns
    ``(subject, body)``, or raises :class:`InvalidValue` saying what went wrong: the template's
    own failure, more memory than allowed, longer than allowed. :meth:`check` compiles a
    template there (compiling is work a template text sets too). Thread-safe: jobs take turns.
    """

    def __init__(self, memory_bytes: int = RENDER_MEMORY_BYTES, seconds: float = RENDER_KILL_SECONDS):
        self.memory_bytes = memory_bytes
        self.seconds = seconds
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._selector: selectors.BaseSelector | None = None
        self._buffer = b""
        self.started = 0  # processes started so far (tests, the log)

    @property
    def pid(self) -> int | None:
        """The rendering process's id while one runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def render(self, subject: str, body: str, context: dict[str, Any]) -> tuple[str, str]:
        reply = self._ask({"subject": subject, "body": body, "context": context})
        return reply["subject"], reply["body"]

    def check(self, text: str) -> None:
        """Raise :class:`InvalidValue` (``line N: problem``) when ``text`` does not compile."""
        problem = self._ask({"check": text})["problem"]
        if problem:
            raise InvalidValue(problem)

    def _ask(self, job: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(job).encode() + b"\n"
        with self._lock:
            for first_try in (True, False):
                self._start()
                try:
                    self._send(data)
                except BrokenPipeError:  # it died since the last job (killed from outside)
                    self._stop()
                    if first_try:
                        continue
                    raise InvalidValue("the template rendering process ended before it took the template") from None
                return self._answer()
        raise AssertionError("not reached")

    def close(self) -> None:
        """End the rendering process (a new one starts at the next render)."""
        with self._lock:
            self._stop()

    # --- the child, seen from here ------------------------------------------------------------

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._stop()
        package_root = Path(__file__).resolve().parent.parent.parent
        # The working folder is the one txm is imported from, so ``-m`` finds this same txm and
        # nothing else of whatever folder txm serve runs in. No file descriptor but the pipes
        # is inherited (close_fds): the child never holds the TTP or HTTP port.
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "txm.alarms.renderer", str(self.memory_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(package_root), close_fds=True)
        except OSError as exc:  # no Python to start (a broken installation), no processes left
            raise InvalidValue(f"the template rendering process could not start: {exc.strerror or exc}") from None
        self.started += 1
        os.set_blocking(self._proc.stdin.fileno(), False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        self._buffer = b""
        ready = self._line(time.monotonic() + START_SECONDS, "start")
        if json.loads(ready).get("ready") is not True:
            self._stop()
            raise InvalidValue("the template rendering process did not start")

    def _send(self, data: bytes) -> None:
        """Write the job without ever blocking for long: the child reads it at once."""
        assert self._proc is not None and self._proc.stdin is not None
        deadline = time.monotonic() + self.seconds
        fd = self._proc.stdin.fileno()
        view = memoryview(data)
        with selectors.DefaultSelector() as writable:
            writable.register(fd, selectors.EVENT_WRITE)
            while view:
                left = deadline - time.monotonic()
                if left <= 0 or not writable.select(left):
                    self._kill()
                    raise InvalidValue("the template rendering process did not take the template")
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    continue

    def _answer(self) -> dict[str, Any]:
        reply = json.loads(self._line(time.monotonic() + self.seconds, "render"))
        if reply.get("exit"):
            self._stop()  # it has said why; a fresh one renders the next template
        if "error" in reply:
            raise InvalidValue(reply["error"])
        return reply

    def _line(self, deadline: float, step: str) -> bytes:
        """The child's next line; its death or silence past ``deadline`` is the template's failure."""
        assert self._proc is not None and self._selector is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self._selector.select(left):
                self._kill()
                if step == "start":
                    raise InvalidValue(f"the template rendering process did not start within {START_SECONDS:g} s")
                raise InvalidValue(f"the template took longer than {self.seconds:g} s and was stopped")
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                code = self._kill()
                why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                if step == "start":
                    raise InvalidValue(f"the template rendering process did not start ({why})")
                raise InvalidValue(f"the template rendering process ended while rendering ({why})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _kill(self) -> int | None:
        """Kill the child (it may be deep in a C call) and reap it; its exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
        self._stop()
        return code

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()  # its input closed, an idle child ends by itself
            except OSError:
                pass
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_default: TemplateProcess | None = None
_default_pid = 0
_default_lock = threading.Lock()


def default_process() -> TemplateProcess:
    """This process's rendering process (started at its first render, ended at exit).

    A process forked from one that had it gets its own, never the parent's pipes.
    """
    global _default, _default_pid
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _default, _default_pid = TemplateProcess(), os.getpid()
        return _default


@atexit.register
def _close_default() -> None:
    if _default is not None and _default_pid == os.getpid():
        _default.close()


# --- the child -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The rendering process: limit its own memory, then render job after job until its input ends."""
    args = sys.argv[1:] if argv is None else argv
    memory = int(args[0]) if args else RENDER_MEMORY_BYTES
    # A Ctrl-C in the terminal reaches the whole process group: the parent decides, and this
    # process ends when the parent closes its input. SIGTERM (systemd stopping txm) ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if resource is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from txm.alarms.templates import compile_problem, render_in_sandbox

    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers goes to the parent
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        end = False
        try:
            job = json.loads(line)
            if "check" in job:
                reply: dict[str, Any] = {"problem": compile_problem(job["check"])}
            else:
                subject, body = render_in_sandbox(job["subject"], job["body"], job["context"])
                reply = {"subject": subject, "body": body}
        except InvalidValue as exc:
            reply = {"error": str(exc)}
        except MemoryError:
            # What the failed allocation left behind is not worth trusting: a new process
            # renders the next template.
            reply = {"error": f"the template needs more than the {memory // 2 ** 20} MB of memory "
                              f"a template may use", "exit": True}
            end = True
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
        if end:
            break


if __name__ == "__main__":
    main()
