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


def test_two_push_sources_scored_out_of_log_order_cover_only_the_all_scored_prefix(tmp_path: Path) -> None:
    """Records of an MQTT source and a receiver interleave in one log; each source's own queue hands
    them on, so a later record of one may be scored before an earlier one of the other. A checkpoint
    must not claim the unscored one (a kill would lose it: it would never be replayed)."""
    log = IngestLog(tmp_path, fsync="off")
    a1 = log.write(IngestRecord("influx", "ns", 1, b"m v=1 1"))
    m1 = log.write(IngestRecord("mqtt", "mqtt", 2, b"x"))
    a2 = log.write(IngestRecord("influx", "ns", 3, b"m v=2 2"))
    log.scored(m1, "mqtt")  # mqtt's record scored first; influx's two still queued
    assert log.covered == log.restored
    log.scored(a1, "influx")
    assert log.covered == a1  # a2 is still waiting: nothing after a1 is claimed
    log.scored(a2, "influx")
    assert log.covered == a2
    m2 = log.write(IngestRecord("mqtt", "mqtt", 4, b"y"))
    assert log.covered == a2  # never moves back while mqtt's new record waits
    log.scored(m2, "mqtt")
    assert log.covered == m2
    log.close()
