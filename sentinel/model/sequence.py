"""The trainer's sequence math: a chunk of ticks of every stream's recurrent autoencoder at once.

The same math as :mod:`.cells` applied tick by tick (cell step, decoder, errors), arranged
for few Python steps: per tick only the recurrence runs (through torch's fused LSTM/GRU
kernel, one call per stream, for up to ``FUSED_MAX`` (64) streams; one batched loop with the
input projection hoisted out for more), and the decoder and the errors are computed for the
whole chunk at once. Also a plain AdamW (the update ``torch.optim.AdamW`` makes on the CPU,
op for op) so training does not import torch's compiler stack on first use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cells import Dims, cell_step, lstm_gates, tick_errors, tick_errors_dense

# Streams up to which each runs through torch's fused kernel, one call per stream; beyond, one
# batched loop. Measured (2 cores, H=32, 2,048 samples): fused 1.26 s vs loop 1.98 s at 48
# streams, even at 128, the loop ahead from there (5.9 vs 6.6 s at 384).
FUSED_MAX = 64


_PERM: dict[tuple[int, str], Tensor] = {}  # LSTM gate permutation per (hidden, device)


def _torch_weights(dims: Dims, W: Tensor, b: Tensor, s: int) -> list[Tensor]:
    """Stream ``s``'s ``W``/``b`` as ``torch.lstm``/``torch.gru`` weights ``[w_ih, w_hh, b_ih, b_hh]``.

    Sentinel's LSTM gate order is i, f, o, g; torch's is i, f, g, o. The hidden-side bias is
    zero (Sentinel has one bias per gate, added with the input), which is the same GRU too.
    """
    F, H = dims.fields, dims.hidden
    Ws, bs = W[s], b[s, :, 0]
    if dims.cell == "lstm":
        key = (H, str(W.device))
        perm = _PERM.get(key)
        if perm is None:
            perm = _PERM[key] = torch.cat((torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                                           torch.arange(2 * H, 3 * H))).to(W.device)
        Ws, bs = Ws[perm], bs[perm]
    return [Ws[:, :F], Ws[:, F:], bs, torch.zeros_like(bs)]


def _recur(dims: Dims, p: dict[str, Tensor], X: Tensor, h: Tensor, c: Tensor | None
           ) -> tuple[Tensor, Tensor, Tensor | None]:
    """Hidden states ``[S,B,T,H]`` for NaN-free inputs ``X`` ``[S,B,T,F]``, and the final ``h, c``.

    The same recurrence as :func:`cells.cell_step` step by step; up to ``FUSED_MAX`` streams
    each go through torch's fused kernel (one call per stream, no Python per step), more
    streams through one batched loop whose input projection is done for the whole chunk.
    """
    S, B, T, F = X.shape
    if S <= FUSED_MAX:
        hs, hn, cn = [], [], []
        for s in range(S):
            w = _torch_weights(dims, p["W"], p["b"], s)
            if dims.cell == "lstm":
                assert c is not None
                out, h1, c1 = torch.lstm(X[s], (h[s][None], c[s][None]), w, True, 1, 0.0, False, False, True)
                cn.append(c1[0])
            else:
                out, h1 = torch.gru(X[s], h[s][None], w, True, 1, 0.0, False, False, True)
            hs.append(out)
            hn.append(h1[0])
        return torch.stack(hs), torch.stack(hn), (torch.stack(cn) if cn else None)
    H = dims.hidden
    Wt = p["W"].transpose(1, 2)  # [S,F+H,GH]
    xp = torch.baddbmm(p["b"].transpose(1, 2), X.reshape(S, B * T, F), Wt[:, :F]).reshape(S, B, T, -1)
    Wh = Wt[:, F:]
    steps: list[Tensor] = []
    # unbind, not xp[:, :, t]: the backward of T slices would write T full-size gradients of xp
    for zx in xp.unbind(2):
        if dims.cell == "lstm":
            assert c is not None
            h, c = lstm_gates(torch.baddbmm(zx, h, Wh), c)
        else:
            zh = torch.bmm(h, Wh)
            r = torch.sigmoid(zx[..., :H] + zh[..., :H])
            u = torch.sigmoid(zx[..., H : 2 * H] + zh[..., H : 2 * H])
            n = torch.tanh(zx[..., 2 * H :] + r * zh[..., 2 * H :])
            h = (1 - u) * n + u * h
        steps.append(h)
    return torch.stack(steps, 2), h, c


def _recur_masked(dims: Dims, p: dict[str, Tensor], X: Tensor, h: Tensor, c: Tensor | None, pred: Tensor,
                  hold: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """:func:`_recur` for inputs with missing fields: a NaN is fed as the model's own (detached)
    prediction, one step at a time. ``hold`` ``[S,B,T]``: steps that leave the state as it was
    (padding, when rewarming). Returns the hidden states, the final ``h, c`` and the carried prediction."""
    T = X.shape[2]
    Dp, dp = p["D"][..., -dims.fields :], p["d"][..., -dims.fields :]
    out = []
    for t in range(T):
        x = X[:, :, t]
        x_in = torch.where(torch.isnan(x), pred.detach(), x)
        h1, c1 = cell_step(dims.cell, p["W"], p["b"], x_in, h, c)
        p1 = torch.baddbmm(dp, h1, Dp)
        if hold is not None:
            keep = hold[:, :, t, None]
            h1 = torch.where(keep, h, h1)
            c1 = torch.where(keep, c, c1) if c is not None and c1 is not None else c1
            p1 = torch.where(keep, pred, p1)
        h, c, pred = h1, c1, p1
        out.append(h)
    return torch.stack(out, 2), h, c, pred


def _run(dims: Dims, p: dict[str, Tensor], X: Tensor, M: Tensor, state: tuple[Tensor, Tensor | None, Tensor, Tensor],
         pw: float, dropout: float, train: bool) -> tuple[Tensor, Tensor, tuple]:
    """Run ``X`` ``[S,B,T,F]`` (normalised) from ``state``; returns per-(S,B) loss sum and count, and the final state."""
    loss, count, state, _e = _forward(dims, p, X, M, state, pw, dropout, train)
    return loss, count, state


def _forward(dims: Dims, p: dict[str, Tensor], X: Tensor, M: Tensor, state: tuple[Tensor, Tensor | None, Tensor, Tensor],
             pw: float, dropout: float, train: bool, hold: Tensor | None = None,
             level: tuple[float, float, Tensor] | None = None) -> tuple[Tensor, Tensor, tuple, Tensor]:
    """Run ``X`` ``[S,B,T,F]`` (normalised) from ``state``; returns per-(S,B) loss sum and count, the
    final state and the per-tick errors ``[S,B,T]``.

    The math of :func:`cells.cell_step`, :func:`cells.decode` and :func:`cells.tick_errors` tick by
    tick, computed as the recurrence alone per step and the decoder and errors for the whole chunk.
    ``hold`` (rewarm only): steps that leave the state unchanged, with error 0. ``level``
    (rewarm only: it has no gradient) adds the scoring's level term, as the bank does.
    """
    h, c, win, pred_prev = state
    S, B, T, F = X.shape
    K = dims.window
    nan = bool(torch.isnan(X).any())
    if nan or hold is not None:
        Hs, h, c, _ = _recur_masked(dims, p, X, h, c, pred_prev, hold)
    else:
        Hs, h, c = _recur(dims, p, X, h, c)
    Hd = torch.nn.functional.dropout(Hs, dropout, training=True) if (train and dropout > 0) else Hs
    out = torch.baddbmm(p["d"], Hd.reshape(S, B * T, -1), p["D"]).reshape(S, B, T, -1)
    rec = out[..., : K * F].reshape(S, B, T, K, F)
    pred = out[..., K * F :]
    if hold is not None:  # a held step carries the prediction it was given
        # (exact for leading padding, the only holds a job has: its streams' histories are
        # left-padded, and an engine history holds no all-missing sample)
        pred = torch.where(hold[..., None], pred_prev[:, :, None].expand_as(pred), pred)
    prev = torch.cat((pred_prev[:, :, None], pred[:, :, :-1]), 2)
    seq = torch.cat((win, X), 2)  # [S,B,K+T,F]
    wins = seq.unfold(2, K, 1)[:, :, 1:].transpose(-1, -2)  # [S,B,T,K,F]: the K inputs up to each tick
    # nothing missing in the chunk or the window carried into it: the same errors in fewer passes
    errs = tick_errors_dense if not nan and hold is None and not bool(torch.isnan(win).any()) else tick_errors
    _, e = errs(X, prev, wins, rec, pw, level)
    if hold is not None:
        e = torch.where(hold, torch.zeros_like(e), e)
    loss = torch.where(M, e, torch.zeros_like(e)).sum(-1)
    count = M.to(X.dtype).sum(-1)
    return loss, count, (h, c, seq[:, :, -K:], pred[:, :, -1]), e


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


class AdamW:
    """``torch.optim.AdamW``'s single-tensor update (betas 0.9/0.999, eps 1e-8), op for op."""

    def __init__(self, params: list[Tensor], lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1 = 1 - b1 ** self.t
        bc2_sqrt = (1 - b2 ** self.t) ** 0.5
        step_size = self.lr / bc1
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        ps = [self.params[i] for i in live]
        gs: list[Tensor] = [g for i in live if (g := self.params[i].grad) is not None]
        ms = [self.m[i] for i in live]
        vs = [self.v[i] for i in live]
        # the same element-wise ops as the single-tensor update, a list at a time
        if self.wd != 0:
            torch._foreach_mul_(ps, 1 - self.lr * self.wd)
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(ps, ms, denom, value=-step_size)
