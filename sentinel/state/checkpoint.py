"""Checkpoint files: tensors and plain data only, written atomically, version-checked on load.

A checkpoint is one ``torch.save`` file holding ``{"format": FORMAT, "version": VERSION,
"meta": <JSON text>, "tensors": {name: Tensor}}``. It is loaded with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a
tensor or plain container, so a hostile file cannot run code. Writes go to a temp
file in the same directory, are fsynced, renamed over ``checkpoint-<seq>.pt`` and
the directory is fsynced; the newest ``keep`` files are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

FORMAT = "sentinel-checkpoint"
VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")


@dataclass
class Checkpoint:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def save(directory: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], keep: int = 3) -> Path:
    """Write a new checkpoint atomically and prune old ones; returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    existing = list_checkpoints(d)
    seq = int(_NAME.match(existing[-1].name).group(1)) + 1 if existing else 1  # type: ignore[union-attr]
    path = d / f"checkpoint-{seq:08d}.pt"
    tmp = d / f".{path.name}.tmp-{os.getpid()}"
    payload = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, allow_nan=True),
               "tensors": {k: v.detach().cpu().contiguous() for k, v in tensors.items()}}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(d)
    finally:
        if tmp.exists():
            tmp.unlink()
    for old in list_checkpoints(d)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def load(path: str | Path) -> Checkpoint:
    """Load one checkpoint file safely; raise :class:`CheckpointError` saying what is wrong."""
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no such checkpoint") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError) as e:
        raise CheckpointError(f"{p}: unreadable or truncated checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # the weights-only unpickler refuses code: UnpicklingError and friends
        raise CheckpointError(f"{p}: refused to load (not tensors and plain data only): {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a Sentinel checkpoint")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {obj.get('version')!r}, this Sentinel reads {VERSION}")
    tensors = obj.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise CheckpointError(f"{p}: malformed tensors section")
    try:
        meta = json.loads(obj.get("meta", ""))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: malformed meta section: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p}: malformed meta section")
    return Checkpoint(meta=meta, tensors=tensors, path=p)


def load_latest(directory: str | Path) -> Checkpoint | None:
    """The newest checkpoint in ``directory`` (None when there is none). Errors are not skipped silently:
    a bad newest file raises, and the caller decides (start fresh or exit)."""
    files = list_checkpoints(directory)
    if not files:
        return None
    return load(files[-1])
