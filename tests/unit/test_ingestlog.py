"""The daemon's ingest log: record codec, replay after a checkpoint, truncation that keeps fallbacks whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.state.ingestlog import IngestLog, IngestRecord
from sentinel.state.wal import WalPosition


@given(st.text(max_size=20), st.sampled_from(["ns", "us", "ms", "s", "m", "h", "µs"]),
       st.integers(-(2**63), 2**63 - 1), st.binary(max_size=200))
def test_record_round_trip(source: str, precision: str, now_ns: int, body: bytes) -> None:
    r = IngestRecord(source, precision, now_ns, body)
    assert IngestRecord.decode(r.encode()) == r


@pytest.mark.parametrize("bad", [b"", b"\x02" + b"\0" * 20, b"\x01" + b"\0" * 8 + b"\xff\xff\x05"])
def test_unreadable_records_raise_value_error(bad: bytes) -> None:
    with pytest.raises(ValueError):
        IngestRecord.decode(bad)


def rec(i: int) -> IngestRecord:
    return IngestRecord("influx", "s", 1_700_000_000_000_000_000 + i, f"m,t=a v={i} {1_700_000_000 + i}".encode())


def test_replay_after_the_restored_position_and_truncation_keeps_older_checkpoints_whole(tmp_path: Path) -> None:
    log = IngestLog(tmp_path, fsync="off", segment_bytes=64 * 1024, keep=2)
    positions = []
    for i in range(30):
        p = log.write(rec(i))
        positions.append(p)
        log.scored(p)
        if i in (9, 19):
            log.checkpointed(log.covered)
    assert log.covered == positions[-1]
    log.close()
    # the newest checkpoint (after record 19) is refused; the daemon falls back to the one after record 9
    again = IngestLog(tmp_path, fsync="off", restored=positions[9])
    got = [r for _, r in again.replay()]
    assert got == [rec(i) for i in range(10, 30)] and again.replayed == 20
    assert next(iter(again.replay()))[0] > positions[9]
    again.close()


def test_a_restart_never_reuses_segment_numbers_the_checkpoint_names(tmp_path: Path) -> None:
    log = IngestLog(tmp_path, fsync="off")
    p = log.write(rec(0))
    log.close()
    for f in tmp_path.iterdir():
        f.unlink()  # the log was lost; the checkpoint still says p
    again = IngestLog(tmp_path, fsync="off", restored=p)
    q = again.write(rec(1))
    assert q.segment > p.segment
    assert [r for _, r in again.replay()] == [rec(1)]
    again.close()


def test_scored_only_moves_forward(tmp_path: Path) -> None:
    log = IngestLog(tmp_path, fsync="off")
    log.scored(WalPosition(3, 10))
    log.scored(WalPosition(2, 99))
    assert log.covered == WalPosition(3, 10)
    log.close()
