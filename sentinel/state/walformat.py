"""The write-ahead log's on-disk format: records, positions, segment names, errors.

Record layout (little endian)::

    length u32 | crc32(length bytes + payload) u32 | payload

A segment is a file named by its 8-digit number holding records back to back.
A **position** ``(segment, offset)`` names the byte after a record.

>>> list(scan(encode(b"ab") + encode(b"c") + b"torn"))
[(10, b'ab'), (19, b'c')]
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ..errors import SentinelError

_HEADER = struct.Struct("<II")
HEADER_BYTES = _HEADER.size
_SEGMENT_DIGITS = 8
MAX_RECORD_BYTES = 2**31  # a u32 length; far above any body limit


class WalError(SentinelError):
    """The log cannot accept writes (an fsync failed, or it is closed)."""


class WalFull(WalError):
    """A write would take the log past its byte bound; retry after a checkpoint truncates it."""

    def __init__(self, needed: int, used: int, limit: int):
        self.needed, self.used, self.limit = needed, used, limit
        super().__init__(f"write-ahead log full: {used} of {limit} bytes used, {needed} more needed")


class WalPosition(NamedTuple):
    """The byte after a record: ``segment`` number and ``offset`` within it. Ordered."""

    segment: int
    offset: int

    def to_json(self) -> list[int]:
        return [self.segment, self.offset]

    @classmethod
    def from_json(cls, v: object) -> WalPosition | None:
        """The inverse of :meth:`to_json`; None for anything that is not a pair of non-negative ints."""
        if (isinstance(v, list | tuple) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)):
            return cls(int(v[0]), int(v[1]))
        return None


START = WalPosition(0, 0)


def seg_name(n: int) -> str:
    return f"{n:0{_SEGMENT_DIGITS}d}"


def list_segments(directory: str | Path) -> list[int]:
    """Segment numbers in ``directory``, ascending."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if len(p.name) == _SEGMENT_DIGITS and p.name.isdigit() and p.is_file())


def header(payload: bytes | memoryview) -> bytes:
    """The 8-byte header of a record holding ``payload``."""
    n = struct.pack("<I", len(payload))
    return n + struct.pack("<I", zlib.crc32(payload, zlib.crc32(n)))


def encode(payload: bytes) -> bytes:
    """One record's bytes (header + payload)."""
    return header(payload) + payload


def scan(data: bytes | memoryview, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(end offset, payload)`` of each good record in ``data`` from ``start``; stops at the first bad one."""
    mv = memoryview(data)
    i, n = start, len(mv)
    while i + HEADER_BYTES <= n:
        length, crc = _HEADER.unpack_from(mv, i)
        end = i + HEADER_BYTES + length
        if end > n:
            return
        payload = mv[i + HEADER_BYTES:end]
        if zlib.crc32(payload, zlib.crc32(mv[i:i + 4])) != crc:
            return
        yield end, bytes(payload)
        i = end


def good_prefix(data: bytes | memoryview) -> int:
    """Length of the longest prefix of ``data`` made of whole, valid records."""
    end = 0
    for end, _ in scan(data):  # noqa: B007 (the last value is the answer)
        pass
    return end


def fsync_dir(d: Path) -> None:
    """fsync a directory (so a created or renamed file's entry is durable)."""
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
