"""The write-ahead log: positions, replay, segments, torn tails, bounds, group commit, failures."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.state import wal as walmod
from sentinel.state.wal import START, WalError, WalFull, WalPosition, WriteAheadLog, list_segments


def records(n: int, size: int = 10) -> list[bytes]:
    return [(f"r{i:05d}-".encode() * size)[: size + i % 7] for i in range(n)]


def replayed(wal: WriteAheadLog, after: WalPosition = START) -> list[bytes]:
    return [p for _, p in wal.replay(after)]


@pytest.mark.parametrize("policy", ["always", "batch", "off"])
def test_round_trip_and_replay_from_every_position(tmp_path: Path, policy: str) -> None:
    recs = records(40)
    with WriteAheadLog(tmp_path, fsync=policy, fsync_delay=0.001, segment_bytes=200) as w:  # type: ignore[arg-type]
        positions = [w.append(r) for r in recs]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert len(list_segments(tmp_path)) > 3  # rolled over
    with WriteAheadLog(tmp_path, fsync=policy) as w:  # type: ignore[arg-type]
        assert replayed(w) == recs
        for i, p in enumerate(positions):
            assert replayed(w, p) == recs[i + 1:]
        assert [p for p, _ in w.replay()] == positions  # replay names the same end positions


def test_new_segment_on_open_and_numbers_never_reused(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="off") as w:
        p = w.append(b"x")
    assert p == WalPosition(1, 8 + 1)
    with WriteAheadLog(tmp_path, fsync="off") as w:
        q = w.append(b"y")
        assert q.segment == 2
        assert w.truncate(q) > 0  # everything covered: the current segment is cut and the old ones go
        r = w.append(b"z")
    assert r.segment == 3 and list_segments(tmp_path) == [3]
    for n in list_segments(tmp_path):
        (tmp_path / f"{n:08d}").unlink()  # an operator wiped the log; the checkpoint still names segment 3
    with WriteAheadLog(tmp_path, fsync="off", min_segment=r.segment + 1) as w:
        assert w.append(b"after wipe").segment == 4
        assert replayed(w, r) == [b"after wipe"]


def test_truncate_deletes_only_covered_segments(tmp_path: Path) -> None:
    recs = records(60)
    with WriteAheadLog(tmp_path, fsync="off", segment_bytes=150) as w:
        positions = [w.append(r) for r in recs]
        before = w.size_bytes
        mid = positions[30]
        freed = w.truncate(mid)
        assert 0 < freed < before and w.size_bytes == before - freed
        assert min(list_segments(tmp_path)) <= mid.segment
        assert replayed(w, mid) == recs[31:]
        assert w.truncate(mid) == 0  # idempotent
        assert w.position == positions[-1]


def test_a_full_log_refuses_writes_until_truncated(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="off", segment_bytes=64, max_bytes=200) as w:
        last = START
        with pytest.raises(WalFull) as e:
            for _ in range(100):
                last = w.append(b"p" * 30)
        assert e.value.limit == 200 and e.value.used + e.value.needed > 200
        assert w.size_bytes <= 200
        kept = replayed(w)
        w.truncate(last)
        w.append(b"p" * 30)  # room again
        assert replayed(w, last) == [b"p" * 30] and len(kept) == 5


def test_bad_records_are_refused(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="off") as w, pytest.raises(ValueError, match="empty"):
        w.append(b"")
    with pytest.raises(WalError, match="closed"):
        w.append(b"x")
    w.close()  # twice is fine


def test_torn_tail_is_cut_on_open_and_writing_continues(tmp_path: Path) -> None:
    recs = records(10)
    with WriteAheadLog(tmp_path, fsync="off") as w:
        positions = [w.append(r) for r in recs]
    seg = tmp_path / f"{positions[-1].segment:08d}"
    data = seg.read_bytes()
    seg.write_bytes(data[: positions[6].offset + 5])  # record 7 torn after 5 bytes
    with WriteAheadLog(tmp_path, fsync="off") as w:
        assert w.repaired_bytes == 5 and seg.stat().st_size == positions[6].offset
        p = w.append(b"new")
        assert replayed(w) == [*recs[:7], b"new"]
        assert replayed(w, positions[6]) == [b"new"]
        assert p.segment == positions[-1].segment + 1


def test_zero_filled_tail_counts_as_torn(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="off") as w:
        w.append(b"one")
    seg = tmp_path / "00000001"
    seg.write_bytes(seg.read_bytes() + b"\0" * 4096)  # a filesystem that extended the file before a crash
    with WriteAheadLog(tmp_path, fsync="off") as w:
        assert replayed(w) == [b"one"] and w.repaired_bytes == 4096


def test_corruption_in_an_older_segment_skips_its_rest_and_is_counted(tmp_path: Path) -> None:
    recs = records(30)
    with WriteAheadLog(tmp_path, fsync="off", segment_bytes=120) as w:
        positions = [w.append(r) for r in recs]
    first = tmp_path / "00000001"
    data = bytearray(first.read_bytes())
    in_first = [i for i, p in enumerate(positions) if p.segment == 1]
    assert len(in_first) >= 2
    data[positions[in_first[0]].offset + 9] ^= 0xFF  # the second record of segment 1
    first.write_bytes(bytes(data))
    with WriteAheadLog(tmp_path, fsync="off") as w:
        got = replayed(w)
        assert w.corrupt_records == 1
    assert got == [recs[0]] + [r for r, p in zip(recs, positions, strict=True) if p.segment > 1]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(min_size=1, max_size=60), min_size=1, max_size=25),
       damage=st.sampled_from(["truncate", "flip", "garbage"]),
       where=st.floats(min_value=0, max_value=1, exclude_max=True),
       junk=st.binary(min_size=1, max_size=40), bit=st.integers(0, 7))
def test_any_damage_to_the_last_segment_leaves_exactly_the_whole_records_before_it(
        tmp_path_factory: pytest.TempPathFactory, payloads: list[bytes], damage: str, where: float,
        junk: bytes, bit: int) -> None:
    d = tmp_path_factory.mktemp("wal")
    with WriteAheadLog(d, fsync="off") as w:
        ends = [w.append(p).offset for p in payloads]
    seg = d / "00000001"
    orig = seg.read_bytes()
    data = bytearray(orig)
    i = int(where * len(data))
    if damage == "truncate":
        data = data[:i]
    elif damage == "flip":
        data[i] ^= 1 << bit
    else:
        data = data[:i] + bytearray(junk)
    seg.write_bytes(bytes(data))
    # the records before the first one whose bytes changed (junk may happen to rebuild a record exactly)
    survivors, start = [], 0
    for p, e in zip(payloads, ends, strict=True):
        if bytes(data[start:e]) != orig[start:e]:
            break
        survivors.append(p)
        start = e
    with WriteAheadLog(d, fsync="off") as w:
        got = replayed(w)
        assert got == survivors
        assert seg.stat().st_size == (ends[len(survivors) - 1] if survivors else 0)
        w.append(b"after")
        assert replayed(w)[-1] == b"after"


def test_one_fsync_covers_every_record_written_before_it(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="batch", fsync_delay=0.001) as w:
        ps = [w.write(r) for r in records(20)]
        w.durable(ps[-1]).result(timeout=30)
        assert all(w.durable(p).done() for p in ps)
        assert 1 <= w.fsyncs <= 21


@pytest.mark.parametrize("policy", ["always", "batch"])
def test_concurrent_writers_all_get_durable_distinct_positions(tmp_path: Path, policy: str) -> None:
    out: list[list[WalPosition]] = [[] for _ in range(6)]
    with WriteAheadLog(tmp_path, fsync=policy, fsync_delay=0.002, segment_bytes=2000) as w:  # type: ignore[arg-type]
        def worker(k: int) -> None:
            for j in range(40):
                out[k].append(w.append(f"{k}:{j}".encode(), timeout=60))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert w.fsyncs <= 240
    allpos = [p for o in out for p in o]
    assert len(allpos) == 240 and len(set(allpos)) == 240
    with WriteAheadLog(tmp_path, fsync="off") as w:
        got = replayed(w)
    assert sorted(got) == sorted(f"{k}:{j}".encode() for k in range(6) for j in range(40))
    for k in range(6):  # each writer's records in its own order
        mine = [g for g in got if g.startswith(f"{k}:".encode())]
        assert mine == [f"{k}:{j}".encode() for j in range(40)]


def test_a_failed_fsync_fails_the_waiters_and_refuses_later_writes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    w = WriteAheadLog(tmp_path, fsync="always")
    w.append(b"fine")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(walmod, "_sync", broken)
    with pytest.raises(WalError, match="Input/output error"):
        w.append(b"lost?", timeout=30)
    with pytest.raises(WalError, match="failed earlier"):
        w.write(b"more")
    w.close()


def test_off_policy_survives_without_close(tmp_path: Path) -> None:
    """Records go to the kernel at once (no user-space buffer): a process killed before close keeps them."""
    w = WriteAheadLog(tmp_path, fsync="off")
    w.append(b"a")
    w.append(b"b")
    with WriteAheadLog(tmp_path, fsync="off") as again:
        assert replayed(again) == [b"a", b"b"]
    os.close(w._fd)


def test_position_json_round_trip() -> None:
    p = WalPosition(3, 77)
    assert WalPosition.from_json(p.to_json()) == p
    for bad in (None, [1], [1, -2], ["1", 2], [True, 1], {"a": 1}):
        assert WalPosition.from_json(bad) is None
