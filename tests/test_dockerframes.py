"""The frames `docker logs` gets for whole lines: made a batch at a time, byte for byte what a
LogEntry a line gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.dockerframes import columns_frames
from pylog.entry import LogEntry
from pylog.frames import Columns, join_frames
from pylog.logreader import encode_for_docker

NOW = 1_795_319_769_670_262_696


def one_by_one(sources: list[str], times: list[int], lines: list[bytes]) -> bytes:
    return join_frames(LogEntry(source=s, time_nano=t, line=line + b"\n").SerializeToString()
                       for s, t, line in zip(sources, times, lines))


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr"]),
                          st.one_of(st.integers(min_value=1 << 56, max_value=(1 << 63) - 1),
                                    st.integers(min_value=NOW, max_value=NOW + 10**12)),
                          st.one_of(st.binary(min_size=1, max_size=300),
                                    st.binary(min_size=16_300, max_size=16_385))),
                min_size=1, max_size=20))
def test_a_batch_is_the_frames_a_line_at_a_time_gives(rows: list[tuple[str, int, bytes]]) -> None:
    sources, times, lines = (list(c) for c in zip(*rows))
    fast = columns_frames(sources, times, lines)
    if max(map(len, lines)) > 16_384:
        assert fast is None
    else:
        assert fast == one_by_one(sources, times, lines)
    assert encode_for_docker(Columns(sources, times, lines)) == one_by_one(sources, times, lines)


def test_times_outside_nine_byte_varints_are_made_a_line_at_a_time() -> None:
    for t in (0, 5, (1 << 56) - 1, -1, -(1 << 63)):
        times = [NOW, t]
        assert columns_frames(["stdout"] * 2, times, [b"a", b"b"]) is None
        assert encode_for_docker(Columns(["stdout"] * 2, times, [b"a", b"b"])) == \
            one_by_one(["stdout"] * 2, times, [b"a", b"b"])


def test_other_sources_and_no_lines() -> None:
    assert columns_frames(["stdin"], [NOW], [b"x"]) is None
    assert columns_frames([], [], []) is None
    assert encode_for_docker(Columns([], [], [])) == b""
