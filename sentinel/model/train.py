"""Batched training of many streams' autoencoders at once.

One optimiser step trains every stream's own weights: the loss is the sum over
streams of each stream's mean error, and each stream's error depends only on its
own slice of the stacked weights, so (with AdamW's per-element updates) the
streams train independently but in one batched computation.

Each stream's history is split into ``segments`` contiguous pieces run in
parallel, chunked for truncated BPTT (``bptt`` steps, state carried and
detached between chunks). The last ``val_fraction`` of the history is held back:
after each epoch it is scored from the state the training pass ends in; each
stream keeps its best weights and stops improving after ``patience`` epochs.
A champion (the weights in use) is scored on the same held-back data so the
caller can keep whichever is better (champion/challenger).
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

from .bank import STD_FLOOR
from .cells import Dims, conditional_matrix, init_params, level_input, normalise, normalise_run
from .sequence import FUSED_MAX, AdamW, _detach, _forward, _run, _slice_state, _zero_state

PARAM_KEYS = ("W", "b", "D", "d")
__all__ = ["FUSED_MAX", "PARAM_KEYS", "TrainJob", "TrainResult", "TrainSettings", "normalisers", "resolve_device",
           "rewarm", "train"]


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
    cond: np.ndarray | None = None  # [n, F, F] the multivariate level term's precision (None = identity)

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


def _n_train(L: int, s: TrainSettings) -> int:
    """Samples of an ``L``-long history that train; the rest (at least one) is held back."""
    return L - max(1, round(L * s.val_fraction))


def _held_back(job: TrainJob, p: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, s: TrainSettings,
               dev: torch.device) -> np.ndarray:
    """Held-back error of weights ``p`` (normalised by their own ``mean``/``std``) on ``job``'s
    history: the training part run from a zero state, then the tail scored."""
    n_tr = _n_train(job.values.shape[1], s)
    X = torch.from_numpy(normalise(job.values, mean, std, job.dims, ~job.loss_mask)).to(dev)
    M = torch.from_numpy(job.loss_mask & ~np.isnan(job.values).all(-1)).to(dev)
    tp = {k: torch.from_numpy(np.ascontiguousarray(p[k], dtype=np.float32)).to(dev) for k in PARAM_KEYS}
    out = _val_loss(job.dims, tp, X[:, :n_tr], X[:, n_tr:], M[:, n_tr:], s.prediction_weight)
    return out.cpu().numpy().astype(np.float64)


def _champion_loss(job: TrainJob, std: np.ndarray, s: TrainSettings, dev: torch.device) -> np.ndarray:
    """The champion's held-back error, converted into the units of a challenger normalised by ``std``
    (NaN where a stream has no champion)."""
    n, _, F = job.values.shape
    if job.champion is None or job.has_champion is None or not job.has_champion.any():
        return np.full(n, np.nan, dtype=np.float64)
    cm, cs = job.champion["mean"], job.champion["std"]
    scale = float(np.nanmean((cs / std) ** 2)) if F else 1.0
    return np.where(job.has_champion, _held_back(job, job.champion, cm, cs, s, dev) * scale, np.nan)


def challenge(job: TrainJob, params: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray,
              s: TrainSettings, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Weights trained elsewhere (a published model version) against ``job``'s champion, on the
    job's own recent history: ``(challenger's held-back error, champion's in the same units)``,
    as :class:`TrainResult` takes them, so the caller keeps whichever is better."""
    dev = resolve_device(device)
    return _held_back(job, params, mean, std, s, dev), _champion_loss(job, std, s, dev)


def train(job: TrainJob, s: TrainSettings, device: str = "cpu",
          progress: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train every stream of ``job`` at once; deterministic for a given job and ``s.seed``."""
    t0 = time.perf_counter()
    dev = resolve_device(device)
    dims = job.dims
    n, L, F = job.values.shape
    torch.manual_seed(s.seed)
    n_tr = _n_train(L, s)
    # Normalisers from every usable sample (the held-back tail included): a stream whose history
    # is shorter than the job's (left-padded) may have little or nothing in the training part.
    mean, std = normalisers(job.values, job.loss_mask)
    held = ~job.loss_mask  # samples that fell in an alert: the scoring baseline slowed on them
    Xnp = normalise(job.values, mean, std, dims, held)
    cond = conditional_matrix(Xnp, job.loss_mask, dims.level_shrink) if dims.conditional else None
    Xall = torch.from_numpy(Xnp).to(dev)
    Mall = torch.from_numpy(job.loss_mask & ~np.isnan(job.values).all(-1)).to(dev)
    Xtr, Xval, Mtr, Mval = Xall[:, :n_tr], Xall[:, n_tr:], Mall[:, :n_tr], Mall[:, n_tr:]

    champion_val = _champion_loss(job, std, s, dev)
    init = init_params(dims, job.seeds)
    if job.champion is not None and job.has_champion is not None and job.has_champion.any():
        hc = torch.from_numpy(job.has_champion)
        for k in PARAM_KEYS:  # warm start from the champion
            init[k] = torch.where(hc.view(-1, *[1] * (init[k].dim() - 1)), torch.from_numpy(job.champion[k]), init[k])

    params = {k: v.to(dev).clone().requires_grad_(True) for k, v in init.items()}
    opt = AdamW(list(params.values()), lr=s.lr, weight_decay=s.weight_decay)

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
            opt.zero_grad()
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
    errors, final_state = rewarm(dims, params_np, mean, std, job.values, s.prediction_weight, dev, alerted=held,
                                 cond=cond)
    return TrainResult(
        params=params_np, mean=mean, std=std, cond=cond,
        val_loss=best_val.cpu().numpy().astype(np.float64),
        champion_val_loss=champion_val,
        epochs=epochs_run, seconds=time.perf_counter() - t0, tag=job.tag, history=history,
        errors=errors, state=final_state,
    )


def rewarm(dims: Dims, params: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, values: np.ndarray,
           prediction_weight: float, device: torch.device | str = "cpu", alerted: np.ndarray | None = None,
           cond: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``values`` ``[n, L, F]`` through the weights from a zero state, as the scoring bank
    (:meth:`Bank.run_sequence`) would: all-missing rows (left padding) leave a stream's state as
    it was and get error 0.

    Returns the per-sample errors ``[n, L]`` and the final state of each stream in the bank's
    format (``h``, ``c`` ``[n,1,H]`` (``[n,1,0]`` for GRU), ``win`` ``[n,1,K,F]``, ``pred`` ``[n,1,F]``, ``base`` ``[n,F]``).
    """
    dev = torch.device(device)
    n, L, _F = values.shape
    with torch.no_grad():
        p = {k: torch.from_numpy(params[k]).to(dev) for k in PARAM_KEYS}
        std_c = np.maximum(std, STD_FLOOR)
        nz = normalise_run(values, mean, std_c, dims, alerted)
        X = torch.from_numpy(nz.x).to(dev)[:, None]
        LV = torch.from_numpy(nz.level).to(dev)
        if cond is not None and dims.conditional:
            LV = level_input(LV, torch.from_numpy(cond).to(dev))
        LV = LV[:, None]
        present = ~torch.isnan(X).all(-1)  # [n,1,L]
        first = int(present[:, 0].float().argmax(1).min()) if bool(present.any()) else L
        X = X[:, :, first:]  # columns where no stream has begun: nothing to run
        LV = LV[:, :, first:]
        hold = ~present[:, :, first:]
        state = _zero_state(dims, n, 1, dev)
        err = torch.zeros(n, L)
        if X.shape[2]:
            M = torch.zeros(hold.shape, dtype=torch.bool, device=dev)
            _, _, state, e = _forward(dims, p, X, M, state, prediction_weight, 0.0, False,
                                      hold=hold if bool(hold.any()) else None,
                                      level=(dims.level_weight, dims.level_k, LV) if dims.level_weight > 0 else None)
            err[:, first:] = e[:, 0].cpu()
    h, c, win, pred = state
    c_out = c if c is not None else torch.zeros(n, 1, 0)
    return err.numpy(), {"h": h.cpu().numpy(), "c": c_out.cpu().numpy(), "win": win.cpu().numpy(),
                         "pred": pred.cpu().numpy(), "base": nz.base.astype(np.float32),
                         "spread": nz.spread.astype(np.float32), "fast": nz.fast.astype(np.float32)}
