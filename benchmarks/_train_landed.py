"""The trainer as landed before the speed work (b39e715), kept verbatim for bench_replay.py's ratio.

Not used by Sentinel. Measured in the same process as the current trainer, so the ratio
says what the change bought on the machine at hand.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from sentinel.model.bank import STD_FLOOR
from sentinel.model.cells import Dims, cell_step, decode, init_params, tick_errors

PARAM_KEYS = ("W", "b", "D", "d")


@dataclass
class TrainJob:
    """Everything a training run needs, as plain arrays (picklable to a worker process).

    ``values`` ``[n, L, F]`` raw samples, oldest first, NaN-padded on the left for
    shorter histories; ``loss_mask`` ``[n, L]`` False where a sample is padding or
    fell in a window that alerted (left out of the loss, still fed as input).
    ``champion`` holds the weights in use (``[n, ...]`` per key, with ``mean``/``std``)
    for warm start and comparison, ``has_champion`` ``[n]`` says which rows have one.
    """

    dims: Dims
    seeds: list[int]
    values: np.ndarray
    loss_mask: np.ndarray
    champion: dict[str, np.ndarray] | None = None
    has_champion: np.ndarray | None = None
    tag: object = None


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    val_loss: np.ndarray
    champion_val_loss: np.ndarray
    epochs: int
    seconds: float
    tag: object = None
    history: list[float] = field(default_factory=list)
    # The best weights replayed over the job's whole history by the scoring code (Bank.run_sequence):
    # per-sample errors ``[n, L]`` for threshold calibration and the final state (``h,c,win,pred``),
    # so the runtime only has to catch up the samples that arrived while this job ran.
    errors: np.ndarray | None = None
    state: dict[str, np.ndarray] | None = None

    @property
    def accepted(self) -> np.ndarray:
        """Per stream: the challenger replaces the champion (no champion, or not worse by > 2%)."""
        ch = self.champion_val_loss
        return np.isnan(ch) | ~(self.val_loss > ch * 1.02 + 1e-9)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 12
    bptt: int = 48
    segments: int = 8
    lr: float = 0.01
    weight_decay: float = 1e-4
    dropout: float = 0.0
    patience: int = 3
    val_fraction: float = 0.2
    prediction_weight: float = 1.0
    seed: int = 0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch.cuda.is_available() is False")
    return torch.device(device)


def normalisers(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-stream, per-field mean and std over masked-in, observed training samples."""
    v = np.where(mask[..., None], values, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled below
        mean = np.nanmean(v, axis=1)
        std = np.nanstd(v, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    scale = np.maximum(np.abs(mean) * 1e-3, STD_FLOOR)
    std = np.where(np.isfinite(std) & (std > scale), std, np.maximum(scale, 1e-3))
    return mean.astype(np.float32), std.astype(np.float32)


def _run(dims: Dims, p: dict[str, Tensor], X: Tensor, M: Tensor, state: tuple[Tensor, Tensor | None, Tensor, Tensor],
         pw: float, dropout: float, train: bool) -> tuple[Tensor, Tensor, tuple]:
    """Run ``X`` ``[S,B,T,F]`` (normalised) from ``state``; returns per-(S,B) loss sum and count."""
    h, c, win, pred_prev = state
    S, B, T, _F = X.shape
    loss = X.new_zeros(S, B)
    count = X.new_zeros(S, B)
    for t in range(T):
        x = X[:, :, t]
        x_in = torch.where(torch.isnan(x), pred_prev.detach(), x)
        h, c = cell_step(dims.cell, p["W"], p["b"], x_in, h, c)
        win = torch.cat((win[:, :, 1:], x[:, :, None, :]), 2)
        hd = torch.nn.functional.dropout(h, dropout, training=True) if (train and dropout > 0) else h
        rec, pred = decode(p["D"], p["d"], hd, dims.window, dims.fields)
        _, e = tick_errors(x, pred_prev, win, rec, pw)
        m = M[:, :, t]
        loss = loss + torch.where(m, e, torch.zeros_like(e))
        count = count + m.to(X.dtype)
        pred_prev = pred
    return loss, count, (h, c, win, pred_prev)


def _zero_state(dims: Dims, S: int, B: int, dev: torch.device) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    h = torch.zeros(S, B, dims.hidden, device=dev)
    c = torch.zeros(S, B, dims.hidden, device=dev) if dims.cell == "lstm" else None
    win = torch.full((S, B, dims.window, dims.fields), float("nan"), device=dev)
    return h, c, win, torch.zeros(S, B, dims.fields, device=dev)


def _slice_state(state: tuple[Tensor, Tensor | None, Tensor, Tensor], j: int
                 ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Sequence ``j`` of a ``[S,B,...]`` state, kept as ``[S,1,...]``."""
    h, c, win, pred = state
    return h[:, j : j + 1], (c[:, j : j + 1] if c is not None else None), win[:, j : j + 1], pred[:, j : j + 1]


def _detach(state: tuple) -> tuple:
    return tuple(s.detach() if s is not None else None for s in state)


def _val_loss(dims: Dims, p: dict[str, Tensor], Xtr: Tensor, Xval: Tensor, Mval: Tensor, pw: float,
              start: tuple | None = None) -> Tensor:
    """Mean error on the held-back tail.

    ``start`` is the state reached after the training part (one sequence per stream,
    ``[S,1,...]``); without it the training part is run from a zero state first.
    """
    with torch.no_grad():
        S = Xtr.shape[0]
        st = start
        if st is None:
            st = _zero_state(dims, S, 1, Xtr.device)
            _, _, st = _run(dims, p, Xtr[:, None], torch.zeros(Xtr.shape[:2], dtype=torch.bool, device=Xtr.device)[:, None],
                            st, pw, 0.0, False)
        loss, cnt, _ = _run(dims, p, Xval[:, None], Mval[:, None], st, pw, 0.0, False)
        return (loss / cnt.clamp(min=1))[:, 0]


def train(job: TrainJob, s: TrainSettings, device: str = "cpu",
          progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train every stream of ``job`` at once; deterministic for a given job and ``s.seed``."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    dims = job.dims
    n, L, F = job.values.shape
    torch.manual_seed(s.seed)
    n_val = max(1, round(L * s.val_fraction))
    n_tr = L - n_val
    # Normalisers from every usable sample (the held-back tail included): a stream whose history
    # is shorter than the job's (left-padded) may have little or nothing in the training part.
    mean, std = normalisers(job.values, job.loss_mask)
    Xall = torch.from_numpy(((job.values - mean[:, None]) / std[:, None]).astype(np.float32)).to(dev)
    Mall = torch.from_numpy(job.loss_mask & ~np.isnan(job.values).all(-1)).to(dev)
    Xtr, Xval, Mtr, Mval = Xall[:, :n_tr], Xall[:, n_tr:], Mall[:, :n_tr], Mall[:, n_tr:]

    # Champion's held-back error, converted into the challenger's normalised units.
    champion_val = np.full(n, np.nan, dtype=np.float64)
    init = init_params(dims, job.seeds)
    if job.champion is not None and job.has_champion is not None and job.has_champion.any():
        hc = torch.from_numpy(job.has_champion)
        cm, cs = job.champion["mean"], job.champion["std"]
        Xc = torch.from_numpy(((job.values - cm[:, None]) / cs[:, None]).astype(np.float32)).to(dev)
        cp = {k: torch.from_numpy(job.champion[k]).to(dev) for k in PARAM_KEYS}
        scale = float(np.nanmean((cs / std) ** 2)) if F else 1.0
        cv = _val_loss(dims, cp, Xc[:, :n_tr], Xc[:, n_tr:], Mval, s.prediction_weight).cpu().numpy() * scale
        champion_val = np.where(job.has_champion, cv, np.nan)
        for k in PARAM_KEYS:  # warm start from the champion
            init[k] = torch.where(hc.view(-1, *[1] * (init[k].dim() - 1)), torch.from_numpy(job.champion[k]), init[k])

    params = {k: v.to(dev).clone().requires_grad_(True) for k, v in init.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=s.lr, weight_decay=s.weight_decay)

    B = max(1, min(s.segments, n_tr // max(8, s.bptt // 2)))
    seg = n_tr // B
    Xs = Xtr[:, : B * seg].reshape(n, B, seg, F)
    Ms = Mtr[:, : B * seg].reshape(n, B, seg)

    best = {k: v.detach().clone() for k, v in params.items()}
    best_val = torch.full((n,), math.inf, device=dev)
    stale = torch.zeros(n, dtype=torch.int64, device=dev)
    # A stream that ran out of patience keeps its best weights from then on, whatever its batch
    # mates do: without this, its result would depend on when the slowest stream stops.
    stopped = torch.zeros(n, dtype=torch.bool, device=dev)
    history: list[float] = []
    epochs_run = 0
    for epoch in range(s.epochs):
        state = _zero_state(dims, n, B, dev)
        for c0 in range(0, seg, s.bptt):
            loss, cnt, state = _run(dims, params, Xs[:, :, c0 : c0 + s.bptt], Ms[:, :, c0 : c0 + s.bptt],
                                    state, s.prediction_weight, s.dropout, True)
            per_stream = loss.sum(1) / cnt.sum(1).clamp(min=1)
            opt.zero_grad(set_to_none=True)
            per_stream.sum().backward()
            opt.step()
            state = _detach(state)
        epochs_run = epoch + 1
        # Held-back score from the state the last segment ended in (it ends where the tail begins,
        # up to the few samples the segmentation left over, which are run first without loss).
        det = {k: v.detach() for k, v in params.items()}
        last = _slice_state(state, B - 1)
        with torch.no_grad():
            rest = Xtr[:, B * seg :]
            if rest.shape[1]:
                _, _, last = _run(dims, det, rest[:, None], torch.zeros(rest.shape[:2], dtype=torch.bool,
                                  device=dev)[:, None], last, s.prediction_weight, 0.0, False)
        val = _val_loss(dims, det, Xtr, Xval, Mval, s.prediction_weight, start=last)
        improved = (val < best_val * (1 - 1e-4)) & ~stopped
        for k in params:
            m = improved.view(-1, *[1] * (params[k].dim() - 1))
            best[k] = torch.where(m, params[k].detach(), best[k])
        best_val = torch.where(improved, val, best_val)
        stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
        history.append(float(best_val[torch.isfinite(best_val)].mean()) if torch.isfinite(best_val).any() else math.nan)
        if progress is not None:
            progress(epochs_run, s.epochs, history[-1])
        stopped |= stale >= s.patience
        if bool(stopped.all()):
            break
    params_np = {k: v.cpu().numpy() for k, v in best.items()}
    errors, final_state = rewarm(dims, params_np, mean, std, job.values, s.prediction_weight, dev)
    return TrainResult(
        params=params_np, mean=mean, std=std,
        val_loss=best_val.cpu().numpy().astype(np.float64),
        champion_val_loss=champion_val,
        epochs=epochs_run, seconds=time.perf_counter() - t0, tag=job.tag, history=history,
        errors=errors, state=final_state,
    )


def rewarm(dims: Dims, params: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, values: np.ndarray,
           prediction_weight: float, device: torch.device | str = "cpu") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``values`` ``[n, L, F]`` through the weights from a zero state with the scoring code.

    Returns the per-sample errors ``[n, L]`` (0 on padding) and the final state of each stream.
    """
    from sentinel.model.bank import Bank

    n = values.shape[0]
    bank = Bank(dims, prediction_weight=prediction_weight, device=device, capacity=max(1, n))
    slots = np.array([bank.add() for _ in range(n)], dtype=np.int64)
    bank.load(slots, {k: torch.from_numpy(params[k]) for k in PARAM_KEYS}, torch.from_numpy(mean),
              torch.from_numpy(std))
    _fe, err = bank.run_sequence(slots, values)
    return err.numpy(), {k: v.cpu().numpy() for k, v in bank.state(slots).items()}
