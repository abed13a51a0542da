"""Restore on start: fall back past bad checkpoints, never reuse a number, clean temp files, WAL position."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sentinel.errors import CheckpointError
from sentinel.state import checkpoint as ckpt
from sentinel.state.wal import WalPosition


def save(d: Path, n: int, **kw: object) -> Path:
    return ckpt.save(d, {"n": n}, {"x": torch.full((4,), float(n))}, keep=10, **kw)  # type: ignore[arg-type]


def applied_into(box: list[int]) -> ckpt.Callable[[ckpt.Checkpoint], None]:
    def apply(c: ckpt.Checkpoint) -> None:
        if c.meta.get("misfit"):
            raise KeyError("g3.bank.W")
        box.append(c.meta["n"])
    return apply


def test_a_truncated_newest_falls_back_to_the_newest_good_older_one(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    save(tmp_path, 1)
    save(tmp_path, 2)
    newest = save(tmp_path, 3)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    got: list[int] = []
    with caplog.at_level(logging.WARNING, logger="sentinel.checkpoint"):
        r = ckpt.restore(tmp_path, applied_into(got))
    assert got == [2] and r.checkpoint is not None and r.checkpoint.meta["n"] == 2
    assert [p.name for p, _ in r.refused] == ["checkpoint-00000003.pt.bad"]
    assert "unreadable or truncated" in r.refused[0][1]
    assert (tmp_path / "checkpoint-00000003.pt.bad").read_bytes() == data[: len(data) // 2]
    said = [r for r in caplog.records if "resumed from an older checkpoint" in r.getMessage()]
    assert len(said) == 1 and said[0].path.endswith("checkpoint-00000002.pt")  # type: ignore[attr-defined]
    assert said[0].refused == [str(tmp_path / "checkpoint-00000003.pt.bad")]  # type: ignore[attr-defined]


def test_one_that_does_not_fit_is_refused_like_a_damaged_one(tmp_path: Path) -> None:
    save(tmp_path, 1)
    ckpt.save(tmp_path, {"n": 2, "misfit": True}, {})
    got: list[int] = []
    r = ckpt.restore(tmp_path, applied_into(got))
    assert got == [1]
    assert "does not fit this config (KeyError: 'g3.bank.W')" in r.refused[0][1]


def test_all_bad_starts_fresh_and_the_next_number_is_new(tmp_path: Path) -> None:
    for n in (1, 2):
        save(tmp_path, n).write_bytes(b"junk")
    r = ckpt.restore(tmp_path, applied_into([]))
    assert r.checkpoint is None and len(r.refused) == 2
    assert ckpt.list_checkpoints(tmp_path) == []
    fresh = save(tmp_path, 9)
    assert fresh.name == "checkpoint-00000003.pt"  # never 00000002 again, the refused file's number


def test_on_bad_exit_raises_and_moves_nothing(tmp_path: Path) -> None:
    save(tmp_path, 1)
    bad = save(tmp_path, 2)
    bad.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"cannot resume: .*checkpoint-00000002.*on_bad_checkpoint: exit"):
        ckpt.restore(tmp_path, applied_into([]), on_bad="exit")
    assert bad.exists()


def test_no_checkpoint_at_all(tmp_path: Path) -> None:
    r = ckpt.restore(tmp_path / "missing", applied_into([]))
    assert r.checkpoint is None and r.refused == [] and r.cleaned == []


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temp_files_of_dead_writers_are_removed_at_start(tmp_path: Path) -> None:
    save(tmp_path, 1)
    stale = tmp_path / f".checkpoint-00000002.pt.tmp-{dead_pid()}"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".checkpoint-00000002.pt.tmp-{os.getppid()}"  # a writer still running: left alone
    live.write_bytes(b"being written")
    r = ckpt.restore(tmp_path, applied_into([]))
    assert r.cleaned == [stale] and not stale.exists() and live.exists()
    assert save(tmp_path, 3).name == "checkpoint-00000003.pt"  # the temp file's number is not reused either


def test_checkpoint_records_the_wal_position_it_covers(tmp_path: Path) -> None:
    p = save(tmp_path, 1, wal_position=WalPosition(7, 4096))
    c = ckpt.load(p)
    assert c.wal_position == WalPosition(7, 4096) and c.meta[ckpt.WAL_KEY] == [7, 4096]
    assert ckpt.load(save(tmp_path, 2)).wal_position is None
    bad = ckpt.save(tmp_path, {ckpt.WAL_KEY: "nonsense"}, {})
    assert ckpt.load(bad).wal_position is None


@pytest.mark.parametrize(("before", "after", "named"), [
    ("spot", "dspot", "detect.threshold.method 'spot' (the config has 'dspot')"),  # loaded silently before
    ("spot", "quantile", "detect.threshold.method 'spot' (the config has 'quantile')"),  # a bare KeyError 't'
    ("dspot", "dspot, depth: 16", "detect.threshold.depth 32 (the config has 16)"),
])
def test_a_checkpoint_fitted_under_other_threshold_settings_is_refused_naming_the_key(
        before: str, after: str, named: str) -> None:
    """D6/D7: a threshold-method change at a restart (a reload refuses it) loaded SPOT state as DSPOT
    without a word (a tail fitted on raw errors read as one on drift-removed errors), or failed as
    "does not fit (KeyError: 't')"; now the checkpoint is refused naming the key."""
    from sentinel.config import load_config_text
    from sentinel.runtime.engine import Engine
    from tests.unit.test_engine import CONFIG, MIN_HISTORY, A, B, feed

    e = Engine(load_config_text(CONFIG.replace("method: spot", f"method: {before}")))
    feed(e, [A, B], 0, MIN_HISTORY + 4)
    meta, tensors = e.snapshot()
    same = Engine(load_config_text(CONFIG.replace("method: spot", f"method: {before}")))
    same.restore(meta, tensors)
    assert same.state_counts()["ready"] == 2
    other = Engine(load_config_text(CONFIG.replace("method: spot", f"method: {after}")))
    with pytest.raises(ValueError, match="its thresholds were fitted with") as err:
        other.restore(meta, tensors)
    assert named in str(err.value)
    old = {k: v for k, v in meta.items() if k != "threshold"}  # written before the settings were recorded
    Engine(load_config_text(CONFIG.replace("method: spot", f"method: {before}"))).restore(old, tensors)
