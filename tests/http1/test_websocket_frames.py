"""Following WebSocket frames without holding them: boundaries, limits, rules."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientlb._http1._websocket import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    TEXT,
    FrameCursor,
    FrameError,
    close_frame,
    frame,
)


def data_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    size = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if size < 126:
        head = bytes((b0, (0x80 if mask else 0) | size))
    elif size < 65536:
        head = bytes((b0, (0x80 if mask else 0) | 126)) + struct.pack("!H", size)
    else:
        head = bytes((b0, (0x80 if mask else 0) | 127)) + struct.pack("!Q", size)
    return head + (b"\x01\x02\x03\x04" if mask else b"") + payload


STREAM = [
    data_frame(TEXT, b"hello"),
    data_frame(BINARY, b"x" * 300),
    data_frame(TEXT, b"a" * 10, fin=False),
    frame(PING, b"p", mask=False),  # control frames may sit inside a message
    data_frame(CONTINUATION, b"b" * 70_000),
    close_frame(1000, "bye", mask=False),
]


@given(cuts=st.lists(st.integers(0, sum(map(len, STREAM))), max_size=8))
def test_boundaries_are_found_however_the_bytes_are_split(cuts: list[int]) -> None:
    data = b"".join(STREAM)
    ends, offset = set(), 0
    for piece in STREAM:
        offset += len(piece)
        ends.add(offset)
    cursor = FrameCursor(masked=False, max_message=1 << 20)
    points = sorted({0, len(data), *cuts})
    seen: set[int] = set()
    for start, stop in itertools.pairwise(points):
        first = cursor.feed(data[start:stop])
        if first > 0:
            seen.add(start + first)
        if first == 0 and start:
            assert start in ends  # it stood at a boundary when the piece began
    assert seen <= ends
    assert cursor.at_boundary and cursor.closed and not cursor.fragmented


def test_a_message_is_measured_across_its_fragments() -> None:
    cursor = FrameCursor(masked=True, max_message=100)
    cursor.feed(data_frame(TEXT, b"a" * 60, fin=False, mask=True))
    with pytest.raises(FrameError) as info:
        cursor.feed(data_frame(CONTINUATION, b"b" * 60, mask=True))
    assert info.value.code == 1009
    fresh = FrameCursor(masked=True, max_message=100)
    for _ in range(5):  # each message on its own is small
        fresh.feed(data_frame(BINARY, b"c" * 60, mask=True))


@pytest.mark.parametrize(
    ("data", "masked", "extensions"),
    [
        (data_frame(TEXT, b"x", mask=True), False, False),  # a server may not mask
        (data_frame(TEXT, b"x"), True, False),  # a client must
        (bytes((0x80 | 0x40 | TEXT, 1)) + b"x", False, False),  # RSV1, nothing negotiated
        (bytes((0x80 | 0x3, 1)) + b"x", False, False),  # a reserved opcode
        (data_frame(PING, b"x", fin=False), False, False),  # a fragmented control frame
        (data_frame(CLOSE, b"x" * 126), False, False),  # a long control frame
        (data_frame(CONTINUATION, b"x"), False, False),  # a continuation of nothing
        (data_frame(TEXT, b"x", fin=False) + data_frame(TEXT, b"y"), False, False),
    ],
)
def test_framing_errors_are_1002(data: bytes, masked: bool, extensions: bool) -> None:
    with pytest.raises(FrameError) as info:
        FrameCursor(masked=masked, max_message=1000, extensions=extensions).feed(data)
    assert info.value.code == 1002


def test_reserved_bits_pass_when_an_extension_was_negotiated() -> None:
    cursor = FrameCursor(masked=False, max_message=1000, extensions=True)
    cursor.feed(bytes((0x80 | 0x40 | TEXT, 3)) + b"x")
    assert not cursor.at_boundary
    assert cursor.feed(b"yz" + frame(PING, mask=False)) == 2  # the frame ends two bytes in


def test_the_proxys_frames_are_masked_only_towards_a_server() -> None:
    plain = close_frame(1001, "bye", mask=False)
    assert plain == bytes((0x88, 5)) + struct.pack("!H", 1001) + b"bye"
    masked = frame(PING, b"abcd", mask=True)
    assert masked[1] == 0x80 | 4 and len(masked) == 2 + 4 + 4
    key, body = masked[2:6], masked[6:]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == b"abcd"
    FrameCursor(masked=True, max_message=10).feed(masked)  # a server would take it
