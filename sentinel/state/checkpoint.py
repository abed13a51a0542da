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
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

FORMAT = "sentinel-checkpoint"
VERSION = 3  # 2: weights stored gates-as-rows, W [S, G*H, F+H]; 3: bank baseline state, per-stream alert levels
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format; anything else is refused unread


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


def _unpickle_reason(e: Exception) -> str:
    """The line of torch's weights-only error that names what was refused (not its advice to disable it)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "nsupported" in ln:
            return ln
    return lines[-1] if lines and "weights_only" not in lines[-1] else "disallowed pickle content"


def load(path: str | Path) -> Checkpoint:
    """Load one checkpoint file safely; raise :class:`CheckpointError` saying what is wrong."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no such checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read checkpoint: {e.strerror or e}") from None
    if head != _ZIP_MAGIC:  # refused before any unpickler sees it (legacy torch files, plain pickles, junk)
        what = "an empty file" if not head else "not a torch zip archive"
        raise CheckpointError(f"{p}: not a Sentinel checkpoint ({what})")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused a global: code, not data
        raise CheckpointError(f"{p}: refused to load, it holds more than tensors and plain data "
                              f"({type(e).__name__}: {_unpickle_reason(e)})") from None
    except Exception as e:  # BadZipFile, EOFError, RuntimeError (miniz), OSError: a damaged file
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{p}: unreadable or truncated checkpoint ({type(e).__name__}: {first})") from None
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
