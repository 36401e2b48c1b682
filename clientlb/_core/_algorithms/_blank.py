"""A fresh Maglev table's memory, taken in pieces.

A table of a million entries is 4 MB that the process has not touched: filling it
costs a page fault per 4 KiB page, about 1.5 ms in all, during which the GIL is
held. Taken a piece at a time, with a pause between pieces, no other thread waits
that long for it.
"""

from __future__ import annotations

from array import array
from collections.abc import Generator

#: Entries taken between two pauses (256 KiB).
PIECE = 1 << 16


def blank_table(size: int) -> Generator[None, None, array[int]]:
    """An array of ``size`` C ints, each -1, made ``PIECE`` entries at a time
    (``yield`` between two pieces)."""
    table = array("i")
    piece = b"\xff" * (table.itemsize * PIECE)  # -1 in two's complement, either byte order
    for start in range(0, size, PIECE):
        if start:
            yield
        table.frombytes(piece[: table.itemsize * min(PIECE, size - start)])
    return table
