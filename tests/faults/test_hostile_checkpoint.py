"""Hostile and broken checkpoints are refused with a clear error and never run code.

Each bad file sits under the newest checkpoint's name. Loading raises
:class:`CheckpointError` saying what is wrong; a pickle whose ``__reduce__`` would
``touch`` a marker file never creates it. With ``state.on_bad_checkpoint: fresh``
the daemon moves the file aside as ``.bad`` and starts from scratch; with ``exit``
it refuses to start (``sentinel run``: non-zero exit, the reason on stderr).
"""

from __future__ import annotations

import os
import pickle
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sentinel.errors import CheckpointError
from sentinel.state import checkpoint as ckpt
from tests.daemon_helpers import RunningDaemon, http, keys, sentinel_exe, tick_batch, write_config

NAME = "checkpoint-00000007.pt"


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _valid_bytes(tmp: Path) -> bytes:
    good = ckpt.save(tmp / "good", {"model_version": 0, "groups": {}, "dims": {}, "cursors": {}},
                     {"x": torch.arange(20_000, dtype=torch.float32)})
    return good.read_bytes()


def evil_torch_save(path: Path, marker: Path) -> None:
    """The exact outer layout of a real checkpoint, with code hidden inside."""
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": "{}", "tensors": {}, "x": Evil(marker)},
               path)


def evil_plain_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"format": ckpt.FORMAT, "x": Evil(marker)}, f)


def truncated(path: Path, marker: Path) -> None:
    data = _valid_bytes(path.parent.parent)
    path.write_bytes(data[: len(data) // 2])


def wrong_version(path: Path, marker: Path) -> None:
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION + 41, "meta": "{}", "tensors": {}}, path)


def random_bytes(path: Path, marker: Path) -> None:
    path.write_bytes(random.Random(5).randbytes(8192))


def random_bytes_zip_header(path: Path, marker: Path) -> None:
    path.write_bytes(b"PK\x03\x04" + random.Random(6).randbytes(8192))


def empty(path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def meta_that_does_not_fit(path: Path, marker: Path) -> None:
    """Safe to load, but its content is nonsense for the engine."""
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": '{"groups": 5, "model_version": "x"}',
                "tensors": {"g1.bank.W": torch.zeros(3)}}, path)


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "evil-torch-save": (evil_torch_save, "holds more than tensors and plain data"),
    "evil-plain-pickle": (evil_plain_pickle, "not a Sentinel checkpoint"),
    "truncated": (truncated, "unreadable or truncated"),
    "wrong-version": (wrong_version, f"format version {ckpt.VERSION + 41}, this Sentinel reads {ckpt.VERSION}"),
    "random-bytes": (random_bytes, "not a Sentinel checkpoint"),
    "random-after-zip-magic": (random_bytes_zip_header, "unreadable or truncated"),
    "empty": (empty, "an empty file"),
}


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def plant(tmp_path: Path, make: Callable[[Path, Path], None], marker: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    path = state / NAME
    make(path, marker)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_refuses_with_a_clear_error_and_runs_no_code(tmp_path: Path, marker: Path, case: str) -> None:
    make, message = CASES[case]
    path = plant(tmp_path, make, marker)
    with pytest.raises(CheckpointError) as err:
        ckpt.load_latest(path.parent)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "weights_only` set to `False`" not in str(err.value)  # never advise turning the protection off
    assert not marker.exists()


@pytest.mark.parametrize("case", ["evil-torch-save", "evil-plain-pickle", "truncated", "wrong-version",
                                  "random-bytes", "meta-does-not-fit"])
def test_daemon_moves_a_bad_checkpoint_aside_and_starts_fresh(tmp_path: Path, marker: Path, case: str) -> None:
    make = meta_that_does_not_fit if case == "meta-does-not-fit" else CASES[case][0]
    path = plant(tmp_path, make, marker)
    original = path.read_bytes()
    d = RunningDaemon(write_config(tmp_path, extra={"state": {"on_bad_checkpoint": "fresh"}}))
    try:
        d.start()
        assert not d.daemon.checkpoint_loaded
        assert d.daemon.engine.n_streams == 0 and d.daemon.engine.model_version == 0
        assert not path.exists()
        assert (path.parent / (NAME + ".bad")).read_bytes() == original
        assert http(d.url + "/-/ready")[0] == 200
        ks = keys(3)
        d.emit(tick_batch(ks, 0, 1_900_000_000.0))
        d.drain()
        assert d.counts()["warming"] == 3  # it runs, from scratch
    finally:
        d.stop()
    assert not marker.exists()
    # the final checkpoint is a fresh, loadable one beside the quarantined file
    assert ckpt.load_latest(path.parent).meta["cursors"] == {"crafted": {"i": 1}}


def test_daemon_refuses_to_start_with_on_bad_checkpoint_exit(tmp_path: Path, marker: Path) -> None:
    path = plant(tmp_path, evil_torch_save, marker)
    d = RunningDaemon(write_config(tmp_path, extra={"state": {"on_bad_checkpoint": "exit"}}))
    try:
        with pytest.raises(CheckpointError, match=r"cannot resume: .*holds more than tensors.*on_bad_checkpoint: exit"):
            d.start()
    finally:
        d.stop()
    assert path.exists() and not marker.exists()


@pytest.mark.timeout(120)
def test_sentinel_run_exits_non_zero_with_the_reason_on_stderr(tmp_path: Path, marker: Path) -> None:
    plant(tmp_path, evil_torch_save, marker)
    cfg = write_config(tmp_path, extra={"state": {"on_bad_checkpoint": "exit"}})
    r = subprocess.run([str(sentinel_exe()), "run", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=90, cwd=tmp_path)
    assert r.returncode != 0
    assert "error: cannot resume:" in r.stderr and NAME in r.stderr and "holds more than tensors" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_d7_a_truncated_newest_checkpoint_falls_back_to_the_newest_good_older_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the daemon started fresh with 0 streams, and then reused the refused file's number."""
    cfg = write_config(tmp_path, extra={"state": {"on_bad_checkpoint": "fresh", "keep": 5}})
    ks = keys(4)
    d = RunningDaemon(cfg).start()
    try:
        d.feed(ks, 0, 5, 1_900_000_000.0)
        d.call(d.daemon.checkpoint())
        d.feed(ks, 5, 10, 1_900_000_000.0)
        d.call(d.daemon.checkpoint())
    finally:
        d.stop()  # the final checkpoint: the newest of three
    files = ckpt.list_checkpoints(tmp_path / "state")
    assert len(files) == 3
    newest = files[-1]
    newest.write_bytes(newest.read_bytes()[:2000])
    d = RunningDaemon(cfg)
    try:
        with caplog.at_level("WARNING"):
            d.start()
        assert d.daemon.checkpoint_loaded and d.daemon.engine.n_streams == 4
        assert (newest.parent / (newest.name + ".bad")).exists()
        assert any("resumed from an older checkpoint" in r.getMessage() for r in caplog.records)
        assert d.daemon.tick is not None and d.daemon.tick.cursors == {"crafted": {"i": 10}}
        path = d.call(d.daemon.checkpoint())
        assert int(path.name[11:19]) == int(newest.name[11:19]) + 1  # never the refused file's number
    finally:
        d.stop()
