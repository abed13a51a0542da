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
of the one-step prediction made from the previous state. Missing fields (NaN) are
fed to the cell as the model's own prediction and excluded from the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

GATES = {"lstm": 4, "gru": 3}


@dataclass(frozen=True, slots=True)
class Dims:
    fields: int
    hidden: int
    window: int
    cell: str = "lstm"

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


def tick_errors(x: Tensor, pred_prev: Tensor, win: Tensor, rec: Tensor, prediction_weight: float
                ) -> tuple[Tensor, Tensor]:
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
    field_err = torch.where(obs, field_err, torch.zeros_like(field_err))
    err = field_err.sum(-1) / obs.sum(-1).clamp(min=1)
    return field_err, err


def tick_errors_dense(x: Tensor, pred_prev: Tensor, win: Tensor, rec: Tensor, prediction_weight: float
                      ) -> tuple[Tensor, Tensor]:
    """:func:`tick_errors` when nothing is missing (no NaN in ``x`` or ``win``): same values, fewer passes."""
    K, F = win.shape[-2], x.shape[-1]
    field_err = ((win - rec) ** 2).sum(-2) / K
    field_err = torch.add(field_err, (x - pred_prev) ** 2, alpha=prediction_weight)
    return field_err, field_err.sum(-1) / F
