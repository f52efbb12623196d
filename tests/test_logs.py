"""RateLimitedLog: the first event of each kind always, a budget per window, and a count of the
rest, said on the next pass of a loop once the window is over (tick) or at stop (flush)."""

from __future__ import annotations

import logging

from txm.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_first_of_each_kind_then_the_budget_then_a_count_when_the_window_is_over(caplog):
    caplog.set_level(logging.INFO, logger="txm.test")
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("txm.test"), "refused thing(s)", window_seconds=60,
                             lines_per_window=0, clock=clock)
    for _ in range(5):
        limited.event(("busy", "192.0.2.1"), logging.INFO, "refused %s", "192.0.2.1")
    limited.event(("busy", "192.0.2.2"), logging.INFO, "refused %s", "192.0.2.2")  # another kind: logged
    assert messages(caplog) == ["refused 192.0.2.1", "refused 192.0.2.2"]

    clock.now += 59
    limited.tick()  # the window is not over: nothing yet
    assert len(caplog.records) == 2
    clock.now += 1
    limited.tick()
    assert messages(caplog)[2:] == ["4 more refused thing(s) left out of the log in the last 60 s"]
    limited.tick()  # said once
    assert len(caplog.records) == 3


def test_a_budget_of_lines_per_window_beyond_the_first_of_each_kind(caplog):
    caplog.set_level(logging.INFO, logger="txm.test")
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("txm.test"), "refused request(s)", window_seconds=10,
                             lines_per_window=3, clock=clock)
    for i in range(10):
        limited.event((400, "M1"), logging.INFO, "line %d", i)
    assert messages(caplog) == ["line 0", "line 1", "line 2"]
    limited.flush()
    assert messages(caplog)[3:] == ["7 more refused request(s) left out of the log in the last 10 s"]
    clock.now += 10  # a new window: its budget is whole again
    limited.event((400, "M1"), logging.INFO, "line %d", 10)
    assert messages(caplog)[-1] == "line 10"
