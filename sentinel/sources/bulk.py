"""The selector's columnar path: a whole body of familiar lines into :class:`~sentinel.columns.Columns`.

A body qualifies when every line is ``head fields [timestamp]`` with no quotes, backslashes,
carriage returns, comments or blank lines; every head is one the selector already knows
(tagset streams whose field layout it has learned, or heads it skips); every field text
matches its head's layout; every value is finite and every timestamp within the bounds.
Then the body is parsed with a few C-level passes (one regex ``findall`` for the lines, one
per field layout for the values, ``map(int)``/``map(float)`` for the numbers) instead of
Python work per line. Anything else returns None and the body takes the per-line path, so
both accept, reject and count exactly the same lines: this path only ever handles bodies
whose every line the per-line path would have taken through a head's learned regex
(:func:`~sentinel.sources.fastpath._learn_layout`) or skipped, with the same numbers.
"""

from __future__ import annotations

import re
from itertools import chain, repeat
from typing import Any

import numpy as np

from ..columns import Columns, SeriesTable
from ..lineprotocol import _I64_MAX
from .fastpath import _fast_fields

_NO_BULK = ('"', "\\", "\r", "\n\n")


def _digit_ints(digits: str, n: int, width: int) -> np.ndarray | None:
    """``n`` decimal numbers of ``width`` ASCII digits each, concatenated in ``digits``, as int64 (what
    ``int()`` of each gives); None when one is beyond int64.

    >>> _digit_ints("0012" "9000" "0100", 3, 4).tolist()
    [12, 9000, 100]
    >>> _digit_ints("9223372036854775807", 1, 19).tolist(), _digit_ints("9223372036854775808", 1, 19)
    ([9223372036854775807], None)
    """
    d = np.frombuffer(digits.encode("ascii"), np.uint8).reshape(n, width) - np.uint8(48)
    v = np.zeros(n, np.uint64)  # 19 digits fit in uint64 (< 1.8e19), none overflows on the way
    ten = np.uint64(10)
    for j in range(width):
        v = v * ten + d[:, j]
    if width >= 19 and int(v.max()) > _I64_MAX:
        return None
    return v.astype(np.int64)


class _Grow:
    """A growable int64 column (per series id)."""

    __slots__ = ("a", "n")

    def __init__(self) -> None:
        self.a = np.zeros(64, np.int64)
        self.n = 0

    def append(self, x: int) -> None:
        if self.n == len(self.a):
            self.a = np.concatenate((self.a, np.zeros(len(self.a), np.int64)))
        self.a[self.n] = x
        self.n += 1


class _Logged(dict):
    """The skipped heads: each one set is also appended to the bulk's log."""

    def __init__(self, log: list[tuple]):
        super().__init__()
        self._log = log

    def __setitem__(self, head: str, reason: str | None) -> None:
        super().__setitem__(head, reason)
        self._log.append(("s", head, reason))


class Bulk:
    """What the columnar path knows: the series table, each head's layout and field order, the skipped heads."""

    def __init__(self) -> None:
        self._layouts: list[tuple[re.Pattern[str], int]] = []  # multi-line value regex, number of values
        self._lid: dict[str, int] = {}
        self._shapes: list[tuple[int, np.ndarray | None, int]] = []  # (layout, value index per field or None, F)
        self._shape_id: dict[tuple[int, tuple[int, ...] | None], int] = {}
        self.reset()

    def reset(self) -> None:
        self.table = SeriesTable()
        self.log: list[tuple] = []  # what this table learned, in order (replayed by replicas: :meth:`apply`)
        self.hid: dict[str, int] = {}  # head text -> series id
        self.skip: dict[str, str | None] = _Logged(self.log)  # head -> reason its lines are refused (None: not selected)
        self._lay = _Grow()
        self._shape = _Grow()

    @property
    def generation(self) -> int:
        """Changes when the table is replaced (a replica of another generation must start again)."""
        return self.table.serial

    def register(self, head: str, h: Any) -> None:
        """A selected tagset head whose layout regex was just learned (``h.rx``, ``h.perm``, ``h.order``)."""
        if head in self.hid or h.rx is None or h.key is None:
            return
        sid = self.table.add(h.key, h.order)
        self._learn(head, h.rx.pattern, h.perm, len(h.order), sid)
        self.log.append(("r", head, h.rx.pattern, h.perm, len(h.order), sid))

    def _learn(self, head: str, pat: str, perm: tuple[int, ...] | None, F: int, sid: int) -> None:
        lid = self._lid.get(pat)
        if lid is None:
            lid = self._lid[pat] = len(self._layouts)
            rx = re.compile(f"^(?:{pat})$", re.M)
            self._layouts.append((rx, rx.groups))
        K = self._layouts[lid][1]
        sk = (lid, perm)
        shape = self._shape_id.get(sk)
        if shape is None:
            shape = self._shape_id[sk] = len(self._shapes)
            idx = None if perm is None else np.array([i if i >= 0 else K for i in perm], np.int64)
            self._shapes.append((lid, idx, F))
        self.hid[head] = sid
        self._lay.append(lid)
        self._shape.append(shape)

    def apply(self, events: list[tuple]) -> None:
        """A replica (an ingest worker's) learns what the original's :attr:`log` holds, in that order."""
        for ev in events:
            if ev[0] == "r":
                self._learn(*ev[1:])
            else:
                dict.__setitem__(self.skip, ev[1], ev[2])

    def _values(self, lid: int, texts: list[str] | tuple[str, ...]) -> np.ndarray | None:
        rx, K = self._layouts[lid]
        got = rx.findall("\n".join(texts))
        if len(got) != len(texts):
            return None
        flat = map(float, chain.from_iterable(got) if K > 1 else got)
        v = np.fromiter(flat, np.float64, len(texts) * K).reshape(len(texts), K)
        return v if np.isfinite(v).all() else None

    def parse(self, body: str, mult: int, now_ns: int, lo: int, hi: int, max_fields: int
              ) -> tuple[Columns | None, dict[str, int], int, int] | None:
        """``(columns or None when no sample, rejected, lines, max_ts_ns)``, or None: take the per-line path."""
        if not body or body[0] == "\n" or any(c in body for c in _NO_BULK):
            return None
        lines = body.split("\n")
        if lines[-1] == "":
            lines.pop()
        n = len(lines)
        spaces = set(map(str.count, lines, repeat(" ")))
        if spaces == {2}:  # head fields timestamp
            tok = " ".join(lines).split(" ")
            hs, fs, tss = tok[0::3], tok[1::3], tok[2::3]
            digits = "".join(tss)
            lens = set(map(len, tss))
            if not (digits.isdigit() and digits.isascii()) or min(lens) == 0 or max(lens) > 19:
                return None  # the per-line path sends these lines to the full scanner
        elif spaces == {1}:  # head fields (receipt time)
            tok = " ".join(lines).split(" ")
            hs, fs, tss = tok[0::2], tok[1::2], [""] * n
        else:
            return None
        hid = np.fromiter(map(self.hid.get, hs, repeat(-1)), np.int64, n)
        # timestamps, as the per-line path computes them (Python ints there: bail out where int64 could differ)
        if "" in tss:
            t_py = [int(t) * mult if t else now_ns for t in tss]
            if max(t_py) > _I64_MAX or min(t_py) < 0:
                return None
            t = np.array(t_py, np.int64)
        else:
            if len(lens) == 1:  # every timestamp of one length (the usual body): digits as a matrix
                t64 = _digit_ints(digits, n, lens.pop())
                if t64 is None:
                    return None  # beyond int64, as int() then fromiter's OverflowError
                t = t64
            else:
                try:
                    t = np.fromiter(map(int, tss), np.int64, n)
                except OverflowError:
                    return None
            if mult != 1:
                if int(t.max()) > _I64_MAX // mult:
                    return None
                t *= mult
        if int(t.min()) < max(lo, 0) or int(t.max()) > min(hi, _I64_MAX):
            return None
        rej: dict[str, int] = {}
        skip = hid < 0
        if skip.any():
            for i in np.flatnonzero(skip).tolist():
                head = hs[i]
                if head not in self.skip:
                    return None  # a head seen for the first time (or a stream never admitted)
                fv = _fast_fields(fs[i])
                if fv is None or len(fv) > max_fields:
                    return None
                reason = self.skip[head]
                if reason is not None:
                    rej[reason] = rej.get(reason, 0) + 1
            rows = np.flatnonzero(~skip)
            if len(rows) == 0:
                return None, rej, n, -1
            hid, t = hid[rows], t[rows]
            texts: list[str] | tuple[str, ...] = [fs[i] for i in rows.tolist()]
        else:
            texts = fs
        V = self._fill(hid, texts)
        if V is None:
            return None
        ts = t / 1e9
        if len(ts) > 1 and not bool((ts[1:] >= ts[:-1]).all()):
            order = np.argsort(ts, kind="stable")  # the per-line path's stable sort by the float timestamp
            hid, ts, V = hid[order], ts[order], V[order]
        return Columns(self.table, hid, ts, V), rej, n, int(t.max())

    def _fill(self, hid: np.ndarray, texts: list[str] | tuple[str, ...]) -> np.ndarray | None:
        """Values ``[n, W]`` of rows ``hid`` (their field texts ``texts``) in each stream's field order."""
        lay = self._lay.a[hid]
        shp = self._shape.a[hid]
        s0 = int(shp[0])
        if bool((shp == s0).all()):  # one layout and field order (the usual body)
            lid, idx, _F = self._shapes[s0]
            v = self._values(lid, texts)
            if v is None or idx is None:
                return v
            return np.concatenate((v, np.full((len(v), 1), np.nan)), 1)[:, idx]
        W = max(self._shapes[s][2] for s in np.unique(shp).tolist())
        V = np.full((len(hid), W), np.nan)
        for lid in np.unique(lay).tolist():
            pos = np.flatnonzero(lay == lid)
            v = self._values(lid, [texts[i] for i in pos.tolist()])
            if v is None:
                return None
            v = np.concatenate((v, np.full((len(v), 1), np.nan)), 1)
            sh = shp[pos]
            for s in np.unique(sh).tolist():
                _l, idx, F = self._shapes[s]
                q = np.flatnonzero(sh == s)
                V[pos[q], :F] = v[q][:, idx] if idx is not None else v[q][:, :F]
        return V
