"""RFC 3339 timestamps as integer nanoseconds."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylog.errors import RequestError
from pylog.timefmt import ZERO_TIME, parse_rfc3339_ns
from tests.helpers_records import format_rfc3339_ns

# 2026-11-22T03:56:09Z, the ContainerCreated second of the basic vector
BASE = calendar.timegm((2026, 11, 22, 3, 56, 9, 0, 0, 0)) * 10**9
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def test_parse_nanoseconds_as_dockerd_sends_them():
    assert parse_rfc3339_ns("2026-11-22T03:56:09.442083574Z") == BASE + 442_083_574


@pytest.mark.parametrize("frac,ns", [
    ("", 0), (".0", 0), (".5", 500_000_000), (".000000001", 1), (".123456789", 123_456_789),
    (".1234", 123_400_000), (".06778441", 67_784_410),
])
def test_fractions_of_any_length_up_to_nine_digits(frac, ns):
    assert parse_rfc3339_ns(f"2026-11-22T03:56:09{frac}Z") == BASE + ns


@pytest.mark.parametrize("value", [ZERO_TIME, "0001-01-01T00:00:00Z", "", None])
def test_go_zero_time_and_empty_mean_unset(value):
    assert parse_rfc3339_ns(value) is None


@pytest.mark.parametrize("value,delta_s", [
    ("2026-11-22T04:56:09.000000007+01:00", 0),
    ("2026-11-21T22:26:09.000000007-05:30", 0),
    ("2026-11-22T03:56:09.000000007+00:00", 0),
    ("2026-11-22T03:56:09.000000007-00:00", 0),
    ("2026-11-22T05:56:09.000000007+01:00", 3600),
    ("2026-11-22T03:56:09.000000007-01:00", 3600),
])
def test_offsets(value, delta_s):
    assert parse_rfc3339_ns(value) == BASE + 7 + delta_s * 10**9


def test_lowercase_separators_are_accepted():
    assert parse_rfc3339_ns("2026-11-22t03:56:09.1z") == BASE + 100_000_000


@pytest.mark.parametrize("value", [
    "yesterday",
    "2026-11-22",
    "2026-11-22T03:56:09",  # no zone
    "2026-11-22T03:56:09.1234567891Z",  # ten fractional digits
    "2026-11-22T03:56:09.Z",
    "2026-11-22T03:56:09+0100",
    "1700000000",
    " 2026-11-22T03:56:09Z",
])
def test_invalid_timestamps_raise_request_error(value):
    with pytest.raises(RequestError, match="RFC3339"):
        parse_rfc3339_ns(value)


@pytest.mark.parametrize("ns,text", [
    (0, "1970-01-01T00:00:00.000000000Z"),
    (1, "1970-01-01T00:00:00.000000001Z"),
    (BASE + 442_083_574, "2026-11-22T03:56:09.442083574Z"),
    (-1, "1969-12-31T23:59:59.999999999Z"),
    (INT64_MAX, "2262-04-11T23:47:16.854775807Z"),
    (INT64_MIN, "1677-09-21T00:12:43.145224192Z"),
])
def test_format_has_nine_digits_in_utc(ns, text):
    assert format_rfc3339_ns(ns) == text
    assert parse_rfc3339_ns(text) == ns


@given(st.integers(INT64_MIN, INT64_MAX))
def test_format_then_parse_round_trips_every_int64(ns):
    assert parse_rfc3339_ns(format_rfc3339_ns(ns)) == ns


@given(st.integers(0, 2**62), st.integers(-23 * 60 - 59, 23 * 60 + 59))
def test_parse_with_any_offset_then_format_gives_utc(ns, offset_min):
    """The same instant written in another zone parses to the same nanoseconds."""
    utc = format_rfc3339_ns(ns)
    shifted = format_rfc3339_ns(ns + offset_min * 60 * 10**9)[:-1]
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    assert parse_rfc3339_ns(f"{shifted}{sign}{hh:02d}:{mm:02d}") == ns
    assert format_rfc3339_ns(parse_rfc3339_ns(utc)) == utc
