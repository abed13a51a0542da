"""Checkpoint files: tensors and plain data only, written atomically, version-checked on load.

A checkpoint is one ``torch.save`` file holding ``{"format": FORMAT, "version": VERSION,
"meta": <JSON text>, "tensors": {name: Tensor}}``. It is loaded with
``torch.load(weights_only=True)``, which refuses any pickled object that is not a
tensor or plain container, so a hostile file cannot run code. Writes go to a temp
file in the same directory, are fsynced, renamed over ``checkpoint-<seq>.pt`` and
the directory is fsynced; the newest ``keep`` files are kept.

Sequence numbers never repeat: the next one is past every file that ever carried a
number here (refused ``.bad`` files and leftover temp files included). On start,
:func:`restore` removes temp files a killed writer left behind, then tries the
newest checkpoint and, if it is unreadable or does not fit, moves it aside as
``.bad`` and falls back to the next older one, saying so in the log. ``meta`` records
the write-ahead log position the checkpoint covers (:data:`WAL_KEY`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .. import failpoints
from ..errors import CheckpointError
from .walformat import WalPosition

log = logging.getLogger("sentinel.checkpoint")

FORMAT = "sentinel-checkpoint"
VERSION = 3  # 2: weights stored gates-as-rows, W [S, G*H, F+H]; 3: bank baseline state, per-stream alert levels
_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
_NUMBERED = re.compile(r"^\.?checkpoint-(\d{8})\.pt")  # also .bad files and temp files: numbers once used
_TEMP = re.compile(r"^\.checkpoint-\d{8}\.pt\.tmp-(\d+)$")
WAL_KEY = "wal_position"  # meta key: [segment, offset] of the last write-ahead log record the checkpoint covers
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's (zip) format; anything else is refused unread


@dataclass
class Checkpoint:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    path: Path | None = None

    @property
    def wal_position(self) -> WalPosition | None:
        """The write-ahead log position this checkpoint covers (None: written without a log)."""
        return WalPosition.from_json(self.meta.get(WAL_KEY))


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


def next_sequence(directory: str | Path) -> int:
    """One past the highest number any checkpoint, refused file or temp file in ``directory`` carried."""
    d = Path(directory)
    if not d.is_dir():
        return 1
    used = [int(m.group(1)) for p in d.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(used, default=0) + 1


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def clean_temp_files(directory: str | Path) -> list[Path]:
    """Remove temp files left by writers that are gone (a kill mid-write); returns what was removed."""
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TEMP.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    if removed:
        log.info("removed checkpoint temp files left by a killed writer",
                 extra={"files": [str(p) for p in removed]})
    return removed


def save(directory: str | Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], keep: int = 3,
         wal_position: WalPosition | None = None) -> Path:
    """Write a new checkpoint atomically and prune old ones; returns its path.

    ``wal_position``: the end of the last write-ahead log record the state covers (stored in meta).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if wal_position is not None:
        meta = {**meta, WAL_KEY: WalPosition(*wal_position).to_json()}
    seq = next_sequence(d)
    path = d / f"checkpoint-{seq:08d}.pt"
    tmp = d / f".{path.name}.tmp-{os.getpid()}"
    # the same text as json.dumps, encoded in Python-level pieces: the one-shot C encoder holds the GIL for
    # the whole meta (60 ms at 100k streams), stalling the scoring thread beside this writer
    text = "".join(json.JSONEncoder(allow_nan=True).iterencode(meta))
    payload = {"format": FORMAT, "version": VERSION, "meta": text,
               "tensors": {k: v.detach().cpu().contiguous() for k, v in tensors.items()}}
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        failpoints.hit("checkpoint.write")
        os.replace(tmp, path)
        _fsync_dir(d)
        failpoints.hit("checkpoint.renamed")
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


@dataclass
class Restored:
    """What :func:`restore` found: the checkpoint applied (None: start fresh) and the files refused."""

    checkpoint: Checkpoint | None
    refused: list[tuple[Path, str]] = field(default_factory=list)  # (moved-aside path, reason)
    cleaned: list[Path] = field(default_factory=list)  # temp files removed


def restore(directory: str | Path, apply: Callable[[Checkpoint], None],
            on_bad: Literal["fresh", "exit"] = "fresh") -> Restored:
    """Apply the newest checkpoint that loads and fits; fall back to older ones, newest first.

    ``apply(checkpoint)`` installs it (and raises if it does not fit; it must leave no half state
    behind, e.g. by building a new engine). A refused file is moved aside as ``<name>.bad`` and the
    next older one is tried. With ``on_bad="exit"`` the first refusal raises
    :class:`CheckpointError` instead and nothing is moved.
    """
    d = Path(directory)
    out = Restored(checkpoint=None, cleaned=clean_temp_files(d))
    for path in reversed(list_checkpoints(d)):
        try:
            c = load(path)
            try:
                apply(c)
            except Exception as e:  # it loaded safely but does not fit: missing keys, wrong shapes or types
                raise CheckpointError(f"{path}: does not fit this config ({type(e).__name__}: {e})") from None
        except CheckpointError as e:
            if on_bad == "exit":
                raise CheckpointError(f"cannot resume: {e} (state.on_bad_checkpoint: exit)") from None
            aside = path.with_name(path.name + ".bad")
            shutil.move(path, aside)
            out.refused.append((aside, str(e)))
            log.error("checkpoint refused, moved aside; trying the next older one",
                      extra={"error": str(e), "moved_to": str(aside)})
            continue
        out.checkpoint = c
        if out.refused:
            log.warning("resumed from an older checkpoint after refusing newer ones",
                        extra={"path": str(path), "refused": [str(p) for p, _ in out.refused]})
        return out
    if out.refused:
        log.error("no usable checkpoint left; starting fresh",
                  extra={"refused": [str(p) for p, _ in out.refused]})
    return out
