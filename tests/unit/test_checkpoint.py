"""Checkpoint files: round trip, atomic writes, keep-N pruning, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sentinel.errors import CheckpointError
from sentinel.state import checkpoint as ckpt

META = {"model_version": 3, "cursors": {"sim": {"t": 1.5e9, "start": 1.49e9}, "pg": None},
        "groups": {"3": {"keys": ["a,b=c", None], "free": [1]}}, "nan": math.nan, "inf": -math.inf}


def tensors() -> dict[str, torch.Tensor]:
    return {"g3.bank.W": torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(1)),
            "g3.a.ready": torch.tensor([True, False]), "g3.a.hist_n": torch.tensor([5, 0], dtype=torch.int64),
            "g3.a.hist_ts": torch.tensor([[1.0, math.nan]], dtype=torch.float64)}


def test_round_trip_keeps_meta_and_tensors_exactly(tmp_path: Path) -> None:
    path = ckpt.save(tmp_path, META, tensors())
    assert path.name == "checkpoint-00000001.pt"
    c = ckpt.load(path)
    assert c.path == path
    assert {k: v for k, v in c.meta.items() if k not in ("nan", "inf")} == {k: v for k, v in META.items()
                                                                          if k not in ("nan", "inf")}
    assert math.isnan(c.meta["nan"]) and c.meta["inf"] == -math.inf
    want = tensors()
    assert set(c.tensors) == set(want)
    for k, v in want.items():
        assert c.tensors[k].dtype == v.dtype
        torch.testing.assert_close(c.tensors[k], v, equal_nan=True, rtol=0, atol=0)
    latest = ckpt.load_latest(tmp_path)
    assert latest is not None and latest.path == path


def test_save_takes_a_non_contiguous_or_grad_tensor(tmp_path: Path) -> None:
    w = torch.randn(4, 6, requires_grad=True)
    ckpt.save(tmp_path, {}, {"t": w.t()})
    torch.testing.assert_close(ckpt.load_latest(tmp_path).tensors["t"], w.detach().t())  # type: ignore[union-attr]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    for _ in range(3):
        ckpt.save(tmp_path, META, tensors(), keep=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-0000000{i}.pt" for i in (1, 2, 3)]


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    good = ckpt.save(tmp_path, {"n": 1}, tensors())

    def broken(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken)
    with pytest.raises(OSError):
        ckpt.save(tmp_path, {"n": 2}, tensors())
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    assert ckpt.load_latest(tmp_path).meta == {"n": 1}  # type: ignore[union-attr]


def test_keep_n_prunes_the_oldest_and_numbering_continues(tmp_path: Path) -> None:
    for i in range(5):
        ckpt.save(tmp_path, {"i": i}, {}, keep=2)
    files = ckpt.list_checkpoints(tmp_path)
    assert [p.name for p in files] == ["checkpoint-00000004.pt", "checkpoint-00000005.pt"]
    assert ckpt.load_latest(tmp_path).meta == {"i": 4}  # type: ignore[union-attr]
    assert ckpt.save(tmp_path, {"i": 5}, {}, keep=1).name == "checkpoint-00000006.pt"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000006.pt"]


def test_listing_ignores_quarantined_temp_and_foreign_files(tmp_path: Path) -> None:
    ckpt.save(tmp_path, {}, {})
    for name in ("checkpoint-00000009.pt.bad", ".checkpoint-00000002.pt.tmp-77", "checkpoint-latest.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000001.pt"]
    # numbers once used (a refused .bad file, a temp file) are never reused
    assert ckpt.save(tmp_path, {}, {}).name == "checkpoint-00000010.pt"


def test_no_checkpoint_is_none_and_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    assert ckpt.load_latest(tmp_path / "absent") is None
    assert ckpt.load_latest(tmp_path) is None
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt.load(tmp_path / "checkpoint-00000001.pt")


@pytest.mark.parametrize(("payload", "message"), [
    ({"format": "something-else", "version": 1, "meta": "{}", "tensors": {}}, "not a Sentinel checkpoint"),
    ([1, 2, 3], "not a Sentinel checkpoint"),
    ({"format": ckpt.FORMAT, "version": 0, "meta": "{}", "tensors": {}}, f"format version 0, this Sentinel reads {ckpt.VERSION}"),
    ({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": "{}", "tensors": {"a": 1}}, "malformed tensors section"),
    ({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": "{}", "tensors": [torch.zeros(1)]}, "malformed tensors section"),
    ({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": "{not json", "tensors": {}}, "malformed meta section"),
    ({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": "[1]", "tensors": {}}, "malformed meta section"),
    ({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": 5, "tensors": {}}, "malformed meta section"),
])
def test_well_formed_files_with_wrong_content_are_refused(tmp_path: Path, payload: object, message: str) -> None:
    path = tmp_path / "checkpoint-00000001.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        ckpt.load(path)
