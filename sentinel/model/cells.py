"""Pure tensor math of the per-stream recurrent autoencoder, shared by scoring and training.

Every stream ``s`` owns its own weights; all streams' weights are stacked along a
leading stream axis so that one ``baddbmm`` advances every stream at once. Shapes
(``S`` streams, ``B`` parallel sequences per stream — 1 when scoring, ``F`` fields,
``H`` hidden units, ``G`` gates: 4 for LSTM, 3 for GRU, ``K`` reconstruction window):

- ``W``  ``[S, G*H, F+H]``  input and recurrent weights, gates as rows: ``z = W [x; h] + b``.
  DESIGN §2.2 reports ``[S, F+H, G*H]`` as the faster layout; measured here (torch 2.13 CPU,
  one ``baddbmm`` per tick) the row-per-gate layout was 25-45% faster for scoring
  (10k streams, H=32, 2 threads: 3.9 vs 5.6 ms), so Sentinel stores this one and training
  reads the transposed view. LSTM gate order ``i, f, o, g`` so one sigmoid covers three gates.
- ``b``  ``[S, G*H, 1]``
- ``D``  ``[S, H, (K+1)*F]`` decoder: from ``h_t`` reconstruct the last ``K`` inputs
  (oldest first) and predict the next one
- ``d``  ``[S, 1, (K+1)*F]``
- ``h``, ``c`` ``[S, B, H]`` (``c`` unused by GRU)

The error of a tick is the reconstruction error of the recent window from the
state that has just absorbed the sample, plus ``prediction_weight`` times the error
of the one-step prediction made from the previous state, plus a *level* term
``level_weight * max(|x| - level_k, 0)^2`` per field: how far the normalised sample
lies outside the band the training data occupied, which the reconstruction alone
misses when a stream glides smoothly to a level it never saw (no gradient: it only
scores). Missing fields (NaN) are fed to the cell as the model's own prediction and
excluded from the error.

Normalisation is against a slow *baseline* rather than the training mean alone: a
causal exponential average of the stream's own samples with a half-life of
``baseline_halflife`` ticks (0 = the fixed training mean), started at the training
mean. A drift slower than that half-life (thermal drift of a healthy machine) is
followed, so it neither saturates the cell nor looks like a fault, while a change
faster than it (a fault, a slide over a day on a 5-minute series) stands out for
about that many ticks. The half-life is in ticks, so it scales with the cadence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

GATES = {"lstm": 4, "gru": 3}
SPREAD_CLIP = 2.0  # deviations beyond this many scales teach the baseline's spread no more


@dataclass(frozen=True, slots=True)
class Dims:
    """The model's shape, plus the fixed constants its scoring uses (see the module docstring)."""

    fields: int
    hidden: int
    window: int
    cell: str = "lstm"
    baseline_halflife: float = 0.0  # ticks; 0 = normalise by the fixed training mean
    level_weight: float = 0.0
    level_k: float = 3.0
    baseline_alerting_rate: float = 1.0  # the baseline's pace on samples that fall in an alert (1 = as any)
    level_halflife: float = 0.0  # ticks of the fast average the level term reads (0 = the sample itself)
    level_shrink: float = -1.0  # multivariate level term's covariance shrinkage (< 0 = off: fields alone)

    @property
    def conditional(self) -> bool:
        """Whether the level term also reads each field against what the other fields predict."""
        return self.fields > 1 and self.level_weight > 0 and self.level_shrink >= 0

    @property
    def level_alpha(self) -> float:
        return 0.0 if self.level_halflife <= 0 else 1.0 - 0.5 ** (1.0 / self.level_halflife)

    @property
    def level_gain(self) -> float:
        """``1 / std`` of a fast average of unit white noise: a sustained shift of d std reads as
        about ``d * level_gain``, while normal noise stays near 1."""
        a = self.level_alpha
        return 1.0 if a <= 0 else float(np.sqrt((2.0 - a) / a))

    @property
    def baseline_alpha(self) -> float:
        """Per-tick weight of a new sample in the baseline (0 = fixed)."""
        return 0.0 if self.baseline_halflife <= 0 else 1.0 - 0.5 ** (1.0 / self.baseline_halflife)

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def dec_out(self) -> int:
        return (self.window + 1) * self.fields

    def param_shapes(self, s: int) -> dict[str, tuple[int, ...]]:
        f, h, g = self.fields, self.hidden, self.gates
        return {"W": (s, g * h, f + h), "b": (s, g * h, 1), "D": (s, h, self.dec_out), "d": (s, 1, self.dec_out)}

    def params_per_stream(self) -> int:
        return sum(int(torch.Size(shape[1:]).numel()) for shape in self.param_shapes(1).values())


def init_params(dims: Dims, seeds: list[int], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Independent initial weights per stream, each drawn from its own seed.

    A stream's initial weights depend only on its seed, never on which other
    streams are initialised with it.
    """
    shapes = dims.param_shapes(1)
    h = dims.hidden
    out: dict[str, list[Tensor]] = {k: [] for k in shapes}
    k_in = 1.0 / (h**0.5)
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        # drawn as [1, F+H, GH] and stored transposed: the same initial weights as that layout
        W = ((torch.rand((1, shapes["W"][2], shapes["W"][1]), generator=gen, dtype=dtype) * 2 - 1) * k_in
             ).transpose(1, 2).contiguous()
        b = torch.zeros(shapes["b"], dtype=dtype)
        if dims.cell == "lstm":
            b[:, h : 2 * h] = 1.0  # forget-gate bias 1 (gate order i, f, o, g): remember by default
        D = (torch.rand(shapes["D"], generator=gen, dtype=dtype) * 2 - 1) * k_in
        out["W"].append(W)
        out["b"].append(b)
        out["D"].append(D)
        out["d"].append(torch.zeros(shapes["d"], dtype=dtype))
    return {k: torch.cat(v, 0) for k, v in out.items()}


def lstm_gates(z: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM update from pre-activations ``z`` ``[S,B,4H]`` in gate order ``i, f, o, g``.

    The three sigmoid gates are contiguous so one ``sigmoid`` covers them.
    """
    H = c.shape[-1]
    s = torch.sigmoid(z[..., : 3 * H])
    g = torch.tanh(z[..., 3 * H :])
    i, f, o = s[..., :H], s[..., H : 2 * H], s[..., 2 * H :]
    c = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c), c


def cell_step(cell: str, W: Tensor, b: Tensor, x: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Advance every stream's cell one step. ``x`` ``[S,B,F]``, ``h``/``c`` ``[S,B,H]``."""
    H = h.shape[-1]
    bt, Wt = b.transpose(1, 2), W.transpose(1, 2)  # [S,1,GH], [S,F+H,GH]: views, no copies
    if cell == "lstm":
        assert c is not None
        return lstm_gates(torch.baddbmm(bt, torch.cat((x, h), -1), Wt), c)
    # GRU: W's last H input columns act on h; the candidate uses r * h.
    F = x.shape[-1]
    zx = torch.baddbmm(bt, x, Wt[:, :F])  # [S,B,3H]
    zh = torch.bmm(h, Wt[:, F:])
    r = torch.sigmoid(zx[..., :H] + zh[..., :H])
    u = torch.sigmoid(zx[..., H : 2 * H] + zh[..., H : 2 * H])
    n = torch.tanh(zx[..., 2 * H :] + r * zh[..., 2 * H :])
    h = (1 - u) * n + u * h
    return h, None


def decode(D: Tensor, d: Tensor, h: Tensor, window: int, fields: int) -> tuple[Tensor, Tensor]:
    """``h`` ``[S,B,H]`` -> (reconstruction ``[S,B,K,F]`` oldest first, next-step prediction ``[S,B,F]``)."""
    out = torch.baddbmm(d, h, D)
    S, B = out.shape[0], out.shape[1]
    rec = out[..., : window * fields].reshape(S, B, window, fields)
    pred = out[..., window * fields :]
    return rec, pred


@dataclass
class Normalised:
    """What :func:`normalise_run` computes over a history ``[n, L, F]``: the model's inputs, the
    level term's input, and the baseline state after the last sample (``[n, F]`` each)."""

    x: np.ndarray
    level: np.ndarray
    base: np.ndarray
    spread: np.ndarray
    fast: np.ndarray


def normalise_run(values: np.ndarray, mean: np.ndarray, std: np.ndarray, dims: Dims,
                  hold: np.ndarray | None = None) -> Normalised:
    """Normalise raw ``values`` ``[n, L, F]`` the way :class:`~sentinel.model.bank.Bank` does tick by tick.

    ``x_t = (x_t - b_t) / s_t`` with ``s_t = max(std, sqrt(v_t))``, ``b_0 = mean``, ``v_0 = std^2``,
    ``b_{t+1} = b_t + alpha (x_t - b_t)`` and ``v_{t+1} = v_t + alpha (min((x_t - b_t)^2, SPREAD_CLIP^2 v_t) - v_t)``
    on observed samples (a missing one leaves both; ``alpha = dims.baseline_alpha``, 0 = the plain
    ``(x - mean) / std``). ``hold`` ``[n, L]`` marks samples (those that fell in an alert) on which
    the baseline moves at ``dims.baseline_alerting_rate`` of its pace. The level term's input is
    the fast average ``f`` (``dims.level_alpha``, never held) against the baseline,
    ``(f_t - b_t) / s_t * dims.level_gain`` (the sample itself when ``level_halflife`` is 0).

    >>> v = np.array([[[1.0], [3.0], [np.nan], [3.0]]])
    >>> normalise_run(v, np.array([[1.0]]), np.array([[2.0]]), Dims(1, 2, 2, baseline_halflife=1.0)).x[0, :, 0].tolist()
    [0.0, 1.0, nan, 0.5]
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    alpha, la, gain, rate = dims.baseline_alpha, dims.level_alpha, dims.level_gain, dims.baseline_alerting_rate
    out = np.empty(values.shape, dtype=np.float32)
    lvl = np.empty(values.shape, dtype=np.float32)
    b, f = mean.copy(), mean.copy()
    v = std**2
    for t in range(values.shape[1]):
        x = values[:, t]
        d = x - b
        scale = np.maximum(std, np.sqrt(v)) if alpha > 0 else std
        out[:, t] = d / scale
        obs = ~np.isnan(x)
        d0 = np.where(obs, d, 0.0)
        if la > 0:
            f = np.where(obs, f + la * (np.nan_to_num(x) - f), f)
            lvl[:, t] = np.where(obs, (f - b) / scale * gain, np.nan)
        else:
            lvl[:, t] = out[:, t]
        if alpha > 0:
            a = alpha if hold is None else np.where(hold[:, t], alpha * rate, alpha)[:, None]
            b = b + a * d0
            v = np.where(obs, v + a * (np.minimum(d0 * d0, SPREAD_CLIP**2 * v) - v), v)
    return Normalised(out, lvl, b, v, f)


def normalise(values: np.ndarray, mean: np.ndarray, std: np.ndarray, dims: Dims,
              hold: np.ndarray | None = None) -> np.ndarray:
    """The model's inputs of :func:`normalise_run` (``[n, L, F]`` float32)."""
    if dims.baseline_alpha <= 0:
        return ((values - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]).astype(np.float32)
    return normalise_run(values, mean, std, dims, hold).x


def conditional_matrix(x: np.ndarray, mask: np.ndarray, shrink: float) -> np.ndarray:
    """Per-stream ``[n, F, F]`` precision ``P`` of the normalised training inputs ``x`` ``[n, L, F]``
    (rows where ``mask`` holds and every field is observed), for the level term's multivariate part.

    ``P`` is the inverse of their second moments shrunk towards the diagonal by ``shrink``. The
    sample's Hotelling distance ``x P x`` splits into one share per field, ``x_j (P x)_j``, each of
    mean 1 on the training data (as ``x_j^2`` is for a lone field): see :func:`level_input`. For
    fields that never co-vary ``P`` is (about) the identity and the shares are ``x_j^2``; for fields
    that move together (two accelerometers, a pump's current and its flow) a break of that relation
    makes the share large even while each field on its own stays in range. Identity where a
    stream has no more complete rows than fields.

    >>> p = conditional_matrix(np.array([[[1.0, 1.0], [-1.0, -1.0], [1.0, 0.9], [-1.0, -0.9]]]), np.ones((1, 4), bool), 0.1)
    >>> x = np.array([0.9, -0.9])  # each field within range, the relation broken
    >>> bool((x * (p[0] @ x)).min() > 5 * (x * x).max())  # each share ~8: far beyond its own 0.81
    True
    """
    n, _L, F = x.shape
    out = np.repeat(np.eye(F, dtype=np.float32)[None], n, 0)
    ok = mask & ~np.isnan(x).any(-1)
    for i in range(n):
        rows = x[i][ok[i]].astype(np.float64)
        if len(rows) <= F:
            continue
        M = rows.T @ rows / len(rows)
        d = np.diag(M).copy()
        if not np.all(np.isfinite(M)) or d.min() <= 0:
            continue
        try:
            P = np.linalg.inv((1.0 - shrink) * M + shrink * np.diag(d))
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(P)) and np.diag(P).min() > 0:
            out[i] = ((P + P.T) / 2).astype(np.float32)
    return out


def level_input(lx: Tensor, prec: Tensor | None) -> Tensor:
    """What the level term reads per field: ``sqrt(max(x_j^2, x_j (P x)_j))`` for the normalised
    sample ``lx`` ``[S,B,F]`` and precision ``prec`` ``[S,F,F]`` (:func:`conditional_matrix`).

    The larger of the field's own distance and its share of the Hotelling distance, so the term
    never reads less than the field alone, and the field that moved carries the share: a spike of
    size ``a`` in one field gives it a share of order ``a^2``, the fields it is tied to only of
    order ``a``. Missing fields count as at the baseline for the others.
    """
    if prec is None:
        return lx
    x0 = torch.nan_to_num(lx)
    share = x0 * torch.bmm(x0, prec)
    return torch.where(torch.isnan(lx), lx, torch.maximum(x0 * x0, share).sqrt())


def tick_errors(x: Tensor, pred_prev: Tensor, win: Tensor, rec: Tensor, prediction_weight: float,
                level: tuple[float, float, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Per-field and total error of one tick.

    ``x`` ``[S,B,F]`` normalised sample (NaN = missing), ``pred_prev`` ``[S,B,F]`` the
    prediction made before it, ``win`` ``[S,B,K,F]`` recent normalised samples including
    ``x`` (NaN = missing or before the stream's start), ``rec`` its reconstruction.
    Returns ``(field_err [S,B,F], err [S,B])``; ``err`` is the mean over observed fields.
    """
    # NaNs are zeroed before any arithmetic so that no NaN reaches a gradient.
    obs = ~torch.isnan(x)
    pe = torch.where(obs, (torch.nan_to_num(x) - pred_prev) ** 2, torch.zeros_like(x))
    wobs = ~torch.isnan(win)
    re = torch.where(wobs, (torch.nan_to_num(win) - rec) ** 2, torch.zeros_like(rec)).sum(-2)
    re = re / wobs.sum(-2).clamp(min=1)
    field_err = re + prediction_weight * pe
    if level is not None and level[0] > 0:
        field_err = field_err + level[0] * torch.relu(torch.nan_to_num(level[2]).abs() - level[1]) ** 2
    field_err = torch.where(obs, field_err, torch.zeros_like(field_err))
    err = field_err.sum(-1) / obs.sum(-1).clamp(min=1)
    return field_err, err


def tick_errors_dense(x: Tensor, pred_prev: Tensor, win: Tensor, rec: Tensor, prediction_weight: float,
                      level: tuple[float, float, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """:func:`tick_errors` when nothing is missing (no NaN in ``x`` or ``win``): same values, fewer passes."""
    K, F = win.shape[-2], x.shape[-1]
    field_err = ((win - rec) ** 2).sum(-2) / K
    field_err = torch.add(field_err, (x - pred_prev) ** 2, alpha=prediction_weight)
    if level is not None and level[0] > 0:
        field_err = torch.add(field_err, torch.relu(level[2].abs() - level[1]) ** 2, alpha=level[0])
    return field_err, field_err.sum(-1) / F
