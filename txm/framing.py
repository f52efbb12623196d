"""Line framing: a byte stream cut into lines, in time linear in the bytes received.

The one framer of txm's line protocols. Bytes in, lines out: it knows nothing of sockets, and
nothing of txm but this module, so the TTP server, the TTP client and LoggerNet all use it.
Each says what ends its lines, how long one may be and what follows an over-long one:

====================================  =========================  ===========  ===========================
who                                   a line ends with           blank lines  after an over-long line
====================================  =========================  ===========  ===========================
TTP requests (:mod:`txm.ttp.loop`)    CR, CR LF or LF (``any``)  skipped      nothing more (the
                                                                              connection is closed)
TTP replies (:mod:`txm.client`)       CR or CR LF (``cr``)       kept         (no limit)
LoggerNet records and                 LF (``lf``; the CR of a    kept         the line is skipped to its
acknowledgements (:mod:`txm.loggernet`)  CR LF stays in the line)             end, framing goes on
====================================  =========================  ===========  ===========================

The LF of a CR LF may arrive in the next packet. An over-long line is reported once, as
:data:`TOO_LONG` in its place, as soon as more than ``max_bytes`` of it have arrived; it is not
kept. Whatever the bytes and however they are cut into packets, the lines are the same and the
work is linear in the bytes: the searching and splitting is done by C loops over each packet
once, and a line that arrives in many packets is gathered without copying it again each time.
"""

from __future__ import annotations

import sys

#: In the lines :meth:`Framer.feed` returns: a line longer than the limit, left out.
TOO_LONG = object()

#: What may end a line: CR, CR LF or LF (blank lines skipped); CR or CR LF; LF.
ENDS = ("any", "cr", "lf")


class Framer:
    """Cuts a byte stream into lines (without their ends); see the module's table.

    ``max_bytes`` bounds one line, its end excluded (None: no bound); the framer never holds
    more than that of an unfinished line. ``ends`` is one of :data:`ENDS`. With ``resume``, an
    over-long line is skipped to its end and framing goes on; without, the framer stops there.
    """

    __slots__ = ("max_bytes", "_limit", "_any", "_cr", "_end", "_resume", "_head", "_after_cr", "_skipping",
                 "_failed")

    def __init__(self, max_bytes: int | None, ends: str = "any", resume: bool = False):
        if ends not in ENDS:
            raise ValueError(f"ends must be one of {', '.join(ENDS)}, not {ends!r}")
        self.max_bytes = max_bytes
        self._limit = sys.maxsize if max_bytes is None else max_bytes
        self._any = ends == "any"
        self._cr = ends == "cr"
        self._end = b"\r" if ends == "cr" else b"\n"
        self._resume = resume
        self._head = bytearray()  # the start of a line whose end has not come yet
        self._after_cr = False  # "cr": the last byte was a CR, so an LF first is its CR LF's
        self._skipping = False  # inside an over-long line, to be skipped to its end
        self._failed = False

    @property
    def pending(self) -> bool:
        """True while part of a line has arrived but not its end."""
        return bool(self._head)

    def feed(self, data: bytes) -> list:
        """Add received bytes; return the complete lines (bytes), in order, and :data:`TOO_LONG`
        in place of a line over the limit (without ``resume`` it is the last item, and the framer
        returns nothing more afterwards)."""
        if self._failed or not data:
            return []
        if self._any:
            data = data.replace(b"\r", b"\n")  # then a CR LF is a line end and a blank line
        elif self._cr:
            if self._after_cr and data[0] == 10:
                data = data[1:]
                if not data:
                    self._after_cr = False
                    return []
            self._after_cr = data[-1] == 13
            data = data.replace(b"\r\n", b"\r")
        lines = data.split(self._end)
        rest = lines.pop()
        head = self._head
        if not lines:  # no line ends here
            if not self._skipping:
                if len(head) + len(rest) > self._limit:
                    return self._too_long([])
                head += rest
            return []
        if self._skipping:
            self._skipping = False
            del lines[0]  # the end of an over-long line
        elif head:
            head += lines[0]
            lines[0] = bytes(head)
            self._head = head = bytearray()
        if self._any:
            lines = list(filter(None, lines))
        limit = self._limit
        if len(data) > limit or (lines and len(lines[0]) > limit):
            longest = max(map(len, lines), default=0)
            if longest > limit:
                if not self._resume:
                    first = next(i for i, line in enumerate(lines) if len(line) > limit)
                    return self._too_long(lines[:first])
                lines = [TOO_LONG if len(line) > limit else line for line in lines]
        if len(rest) > limit:
            return self._too_long(lines)
        head += rest
        return lines

    def _too_long(self, lines: list) -> list:
        self._head = bytearray()
        if self._resume:
            self._skipping = True
        else:
            self._failed = True
        lines.append(TOO_LONG)
        return lines
