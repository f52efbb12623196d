"""TTP reads ASCII digits only (docs/protocol.md): a value, timestamp or alarm level written with
other digits (Arabic-Indic ١٢٣, fullwidth ２０２６, ...) is refused, never stored as a number."""

from __future__ import annotations

import sys
import unicodedata
from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from txm import manage
from txm.db import schema
from txm.serve import ServerThread
from txm.ttp.parser import ProtocolError, parse_alarm, parse_upload

#: Every decimal digit of Unicode that is not an ASCII digit.
OTHER_DIGITS = [chr(c) for c in range(sys.maxunicode + 1)
                if unicodedata.category(chr(c)) == "Nd" and not "0" <= chr(c) <= "9"]


def _spell(number: str, digits: str) -> str:
    """``number`` with each ASCII digit replaced by the digit of the same value in ``digits``."""
    return "".join(digits[int(c)] if c.isascii() and c.isdigit() else c for c in number)


@given(digit=st.sampled_from(OTHER_DIGITS), where=st.sampled_from(["value", "year", "second", "fraction"]))
def test_the_parser_refuses_every_other_digit(digit, where):
    zero = ord(digit) - unicodedata.digit(digit)
    digits = "".join(chr(zero + n) for n in range(10))
    value, year, second, fraction = "12.5", "2026", "30", "123456"
    spelled = {"value": value, "year": year, "second": second, "fraction": fraction}
    spelled[where] = _spell(spelled[where], digits)
    argument = f"<{spelled['year']}-1-16 15:30:{spelled['second']}.{spelled['fraction']};{spelled['value']}>"
    with pytest.raises(ProtocolError) as refused:
        parse_upload(argument, 1)
    assert refused.value.code == 400
    with pytest.raises(ProtocolError):
        parse_alarm(f"<{_spell('42', digits)};data>")


def test_the_server_stores_no_sample_or_alarm_written_with_other_digits(settings, open_meter):
    manage.syncdb(settings)
    manage.add_unit("M1", "key", 1)
    schema.database.close()
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=30,
                      module_services=False) as server:
        meter = open_meter(server.ttp_port)
        for line in ("TTP /up/M1/<2026-1-16 15:30:45;١٢٣> key",          # Arabic-Indic value
                     "TTP /up/M1/<２０２６-1-16 15:30:45;1> key",          # fullwidth year
                     "TTP /up/M1/<2026-1-16 15:30:４５;1> key",            # fullwidth second
                     "TTP /al/M1/<４;x> key"):                              # fullwidth alarm level
            assert meter.ask(line) == "400 Bad request", line
        assert meter.ask("TTP /up/M1/<2026-1-16 15:30:45;123> key") == "OK"
    with closing(manage.syncdb(settings).database):
        assert [s.ch1 for s in schema.Sample.select()] == [123.0]
        assert schema.Alarm.select().count() == 0
