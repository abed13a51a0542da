"""The model bank: every stream's weights and recurrent state, stacked, stepped in one batch.

A :class:`Bank` holds streams of one field count ``F`` (the runtime keeps one bank
per ``F``). Streams occupy *slots*; joining takes a free slot, leaving frees it,
and no other slot is touched, so a stream's numbers never depend on its
neighbours. :meth:`Bank.step` advances the given slots by one sample each: O(1)
work per sample, state ``(h, c)`` carried from tick to tick.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..slots import grown
from .cells import SPREAD_CLIP, Dims, cell_step, decode, level_input, tick_errors, tick_errors_dense

STD_FLOOR = 1e-6
STEP_SLICE = 8192  # Bank.step runs larger batches in slices of this many rows (bounded temporaries)

#: ``model.weight_dtype`` -> the dtype the recurrent weights ``W`` are stored in.
WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Bank:
    """Stacked per-stream autoencoders for streams with ``dims.fields`` fields.

    Tensors (``C`` = capacity): params ``W,b,D,d`` (see :mod:`sentinel.model.cells`),
    ``xh`` ``[C,1,F+H]`` holding the last input and the hidden state ``h`` side by side
    (so the step's ``[x, h] @ W`` needs no concatenation), ``c`` ``[C,1,H]`` (LSTM),
    ``win`` ``[C,1,K,F]`` recent normalised inputs, ``pred`` ``[C,1,F]`` the prediction
    of the next sample, ``base`` ``[C,F]`` the slow baseline inputs are normalised against
    and ``spread`` ``[C,F]`` the slow mean square of the samples around it (state; the
    training mean and variance after a reset), ``mean,std`` ``[C,F]``.

    ``weight_dtype``: the recurrent weights ``W`` (the bytes every tick reads: ``4H(F+H)`` per stream)
    are stored in it (float32, bfloat16 or float16); the step rounds the input to that dtype, the matrix
    kernel sums the products in float32 and rounds each gate pre-activation once, and everything after
    (gates, state, decoder, errors) is float32. :meth:`params` hands the weights out as float32.
    """

    def __init__(self, dims: Dims, *, prediction_weight: float = 1.0, device: str | torch.device = "cpu",
                 capacity: int = 64, dtype: torch.dtype = torch.float32, weight_dtype: torch.dtype | str = torch.float32):
        self.dims = dims
        self.prediction_weight = float(prediction_weight)
        self.device = torch.device(device)
        self.dtype = dtype
        self.weight_dtype = WEIGHT_DTYPES[weight_dtype] if isinstance(weight_dtype, str) else weight_dtype
        self.capacity = 0
        self.max_capacity: int | None = None  # growth stops here (streams.max_streams): slots.grown
        self._free: list[int] = []
        self.t: dict[str, Tensor] = {}
        self._dirty = np.zeros(0, dtype=np.int64)  # ticks until a slot's window holds no NaN
        self._grow(max(1, capacity))

    # -- slots -------------------------------------------------------------
    def _shapes(self, c: int) -> dict[str, tuple[int, ...]]:
        d = self.dims
        shapes = d.param_shapes(c)
        shapes.update({
            "xh": (c, 1, d.fields + d.hidden), "c": (c, 1, d.hidden if d.cell == "lstm" else 0),
            "win": (c, 1, d.window, d.fields), "pred": (c, 1, d.fields), "mean": (c, d.fields), "std": (c, d.fields),
            "base": (c, d.fields), "spread": (c, d.fields), "fast": (c, d.fields),
            "cond": (c, d.fields, d.fields),
        })
        return shapes

    def _grow(self, new_cap: int) -> None:
        old = self.capacity
        for name, shape in self._shapes(new_cap).items():
            fill = float("nan") if name == "win" else (1.0 if name == "std" else 0.0)
            t = torch.full(shape, fill, dtype=self.weight_dtype if name == "W" else self.dtype, device=self.device)
            if name == "cond":
                t[:] = torch.eye(self.dims.fields, dtype=self.dtype)
            if old:
                t[:old] = self.t[name]
            self.t[name] = t
        dirty = np.full(new_cap, self.dims.window, dtype=np.int64)
        dirty[:old] = self._dirty
        self._dirty = dirty
        self._free.extend(range(new_cap - 1, old - 1, -1))
        self.capacity = new_cap

    def add(self) -> int:
        """Take a free slot (its state reset); grows the stacked tensors when full (:func:`~sentinel.slots.grown`)."""
        if not self._free:
            self._grow(grown(self.capacity, self.capacity + 1, self.max_capacity))
        slot = self._free.pop()
        self.reset_state(np.array([slot]))
        return slot

    def remove(self, slot: int) -> None:
        self._free.append(int(slot))

    def free_slots(self) -> list[int]:
        """The free slots, in the order :meth:`add` takes them from the end (for a checkpoint)."""
        return list(self._free)

    def restore_slots(self, capacity: int, free: list[int]) -> None:
        """Grow to ``capacity`` and set the free list as a checkpoint recorded it."""
        if self.capacity < capacity:
            self._grow(capacity)
        self._free = [int(s) for s in free]

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    def _idx(self, slots: np.ndarray | Tensor) -> Tensor:
        return torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)

    # -- weights and state ---------------------------------------------------
    def load(self, slots: np.ndarray, params: dict[str, Tensor], mean: Tensor, std: Tensor,
             cond: Tensor | None = None) -> None:
        """Set weights and normalisers of ``slots`` (params ``[n, ...]``; ``cond`` ``[n, F, F]`` the
        multivariate level term's precision matrix, identity when not given)."""
        idx = self._idx(slots)
        self.t["cond"][idx] = (torch.eye(self.dims.fields, dtype=self.dtype) if cond is None
                               else cond.to(self.device, self.dtype))
        for k in ("W", "b", "D", "d"):
            self.t[k][idx] = params[k].to(self.device, self.t[k].dtype)
        self.t["mean"][idx] = mean.to(self.device, self.dtype)
        self.t["std"][idx] = std.to(self.device, self.dtype).clamp(min=STD_FLOOR)
        self.t["base"][idx] = self.t["mean"][idx]
        self.t["spread"][idx] = self.t["std"][idx] ** 2
        self.t["fast"][idx] = self.t["mean"][idx]

    def params(self, slots: np.ndarray) -> dict[str, Tensor]:
        idx = self._idx(slots)
        return {k: self.t[k][idx].to(self.dtype, copy=True) for k in ("W", "b", "D", "d", "mean", "std", "cond")}

    def reset_state(self, slots: np.ndarray) -> None:
        idx = self._idx(slots)
        self.t["xh"][idx] = 0.0
        self.t["c"][idx] = 0.0
        self.t["pred"][idx] = 0.0
        self.t["win"][idx] = float("nan")
        self.t["base"][idx] = self.t["mean"][idx]
        self.t["spread"][idx] = self.t["std"][idx] ** 2
        self.t["fast"][idx] = self.t["mean"][idx]
        self._dirty[np.asarray(slots, dtype=np.int64)] = self.dims.window

    def state(self, slots: np.ndarray) -> dict[str, Tensor]:
        """``h`` ``[n,1,H]``, ``c``, ``win``, ``pred`` of ``slots`` (copies)."""
        idx = self._idx(slots)
        F = self.dims.fields
        return {"h": self.t["xh"][idx][..., F:].clone(), "c": self.t["c"][idx].clone(),
                "win": self.t["win"][idx].clone(), "pred": self.t["pred"][idx].clone(),
                "base": self.t["base"][idx].clone(), "spread": self.t["spread"][idx].clone(),
                "fast": self.t["fast"][idx].clone()}

    def set_state(self, slots: np.ndarray, state: dict[str, Tensor]) -> None:
        idx = self._idx(slots)
        F = self.dims.fields
        for k, v in state.items():
            v = v.to(self.device, self.dtype)
            if k == "h":
                xh = self.t["xh"][idx]
                xh[..., F:] = v
                self.t["xh"][idx] = xh
            else:
                self.t[k][idx] = v
        self._dirty[np.asarray(slots, dtype=np.int64)] = self.dims.window

    # -- scoring -------------------------------------------------------------
    @torch.inference_mode()
    def step(self, slots: np.ndarray, x: np.ndarray | Tensor, hold: np.ndarray | None = None
             ) -> tuple[Tensor, Tensor]:
        """Advance ``slots`` (unique) by one raw sample each; ``x`` ``[n, F]`` (NaN = missing).

        ``hold`` (bool per row): the sample falls in an alert, so the slow baseline moves at
        ``dims.baseline_alerting_rate`` of its pace (a fault is not learned as the new level).

        Returns ``(field_err [n, F], err [n])`` on the CPU. When ``slots`` is a range
        ``lo..lo+n-1`` (every stream ticking, or a body carrying a run of them: the common
        case) the stacked tensors are used as views and updated in place: the weights are
        read once and nothing is gathered.
        """
        slots = np.asarray(slots, dtype=np.int64)
        n = len(slots)
        if n <= STEP_SLICE:
            return self._step(slots, x, hold)
        # in slices, so that the step's temporaries (gates, window, errors: ~1 KB a row at H = 32) are those
        # of STEP_SLICE rows, not of every stream at once; the whole batch's dense/NaN path is kept, so
        # every row's result is the one an unsliced step gives
        xr = x if isinstance(x, np.ndarray) else torch.as_tensor(x).cpu().numpy()
        dense = not np.isnan(xr).any() and not self._dirty[slots].any()
        out = [self._step(slots[i : i + STEP_SLICE], x[i : i + STEP_SLICE],
                          None if hold is None else hold[i : i + STEP_SLICE], dense) for i in range(0, n, STEP_SLICE)]
        return torch.cat([f for f, _e in out]), torch.cat([e for _f, e in out])

    def _step(self, slots: np.ndarray, x: np.ndarray | Tensor, hold: np.ndarray | None = None,
              dense: bool | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`step` of one slice; ``dense``: the whole batch's no-NaN path (None: this slice's)."""
        n = len(slots)
        d = self.dims
        F = d.fields
        x_t = torch.as_tensor(x, dtype=self.dtype).to(self.device).reshape(n, 1, F)
        t = self.t
        lo = int(slots[0]) if n else 0
        contiguous = n > 0 and int(slots[-1]) - lo == n - 1 and (n == 1 or bool(np.all(np.diff(slots) == 1)))
        if contiguous:  # a range of slots: views, no gather copy of the weights, state updated in place
            sel = {k: v[lo : lo + n] for k, v in t.items()}
            idx = None
        else:
            idx = self._idx(slots)
            sel = {k: v[idx] for k, v in t.items()}
        base = sel["base"]
        alpha = d.baseline_alpha
        # with a moving baseline, the scale is the larger of the training std and the recent spread
        scale = sel["std"] if alpha <= 0 else torch.maximum(sel["std"], sel["spread"].sqrt())
        dev_x = x_t - base[:, None, :]
        xn = dev_x / scale[:, None, :]
        pred_prev = sel["pred"]
        # missing fields per row, from the raw input (a numpy check is far cheaper than torch's here)
        xr = x if isinstance(x, np.ndarray) else x_t.cpu().numpy()
        nan_rows = np.isnan(xr).reshape(n, F).any(1)
        if dense is None:
            dense = not nan_rows.any() and not self._dirty[slots].any()
        xh = sel["xh"]
        xh[..., :F] = xn if not nan_rows.any() else torch.where(torch.isnan(xn), pred_prev, xn)
        c: Tensor | None
        if d.cell == "lstm":
            # the same update as cells.lstm_gates, written into the state tensors in place
            H = d.hidden
            W = sel["W"]
            if W.dtype == self.dtype:
                z = torch.baddbmm(sel["b"], W, xh.transpose(1, 2)).transpose(1, 2)  # [n,1,4H]
            else:  # reduced weights: the input rounded to their dtype, products summed in float32 by the kernel
                z = torch.bmm(W, xh.transpose(1, 2).to(W.dtype)).to(self.dtype).add_(sel["b"]).transpose(1, 2)
            sg = torch.sigmoid(z[..., : 3 * H])
            c = sel["c"]
            c.mul_(sg[..., H : 2 * H]).addcmul_(sg[..., :H], torch.tanh(z[..., 3 * H :]))
            h = torch.mul(sg[..., 2 * H :], torch.tanh(c), out=xh[..., F:])
        else:
            h, c = cell_step(d.cell, sel["W"].to(self.dtype), sel["b"], xh[..., :F], xh[..., F:], None)
        win = torch.cat((sel["win"][:, :, 1:], xn[:, :, None, :]), 2)
        rec, pred = decode(sel["D"], sel["d"], h, d.window, F)
        errs = tick_errors_dense if dense else tick_errors
        level = None
        if d.level_weight > 0:
            lx = xn
            if d.level_alpha > 0:  # the level term reads a fast average of the sample (state, never held)
                fast = sel["fast"]
                fast_new = fast + torch.nan_to_num(x_t[:, 0] - fast) * d.level_alpha
                if idx is None:
                    fast.copy_(fast_new)
                else:
                    t["fast"][idx] = fast_new
                lx = ((fast_new - base) / scale * d.level_gain)[:, None, :]
            level = (d.level_weight, d.level_k, level_input(lx, sel["cond"]) if d.conditional else lx)
        field_err, err = errs(xn, pred_prev, win, rec, self.prediction_weight, level)
        spread = sel["spread"]
        if alpha > 0:  # the slow baseline and spread follow the observed fields (in place on a view)
            dv = torch.nan_to_num(dev_x[:, 0])
            a_t: Tensor | float = alpha
            if hold is not None and d.baseline_alerting_rate != 1.0 and hold.any():
                rate = np.where(hold, d.baseline_alerting_rate, 1.0).astype(np.float32)
                a_t = alpha * torch.from_numpy(rate).to(self.device)[:, None]
            obs = ~torch.isnan(dev_x[:, 0])
            # the spread learns from deviations clipped at SPREAD_CLIP times its own scale, so a
            # fault widens it only slowly while a slow drift's growing lag is followed
            dsp = torch.where(obs, torch.minimum(dv * dv, SPREAD_CLIP**2 * spread) - spread,
                              torch.zeros_like(spread)) * a_t
            if idx is None:
                base.add_(dv * a_t)
                spread.add_(dsp)
            else:
                base, spread = base + dv * a_t, spread + dsp
        if d.cell != "lstm":
            xh[..., F:] = h
        if idx is None:  # xh and c were updated in place
            t["win"][lo : lo + n] = win
            t["pred"][lo : lo + n] = pred
        else:
            t["xh"][idx] = xh
            if c is not None:
                t["c"][idx] = c
            t["win"][idx] = win
            t["pred"][idx] = pred
            t["base"][idx] = base
            t["spread"][idx] = spread
        self._dirty[slots] = np.where(nan_rows, d.window, np.maximum(self._dirty[slots] - 1, 0))
        return field_err[:, 0].cpu(), err[:, 0].cpu()

    def run_sequence(self, slots: np.ndarray, xs: np.ndarray | Tensor, hold: np.ndarray | None = None
                     ) -> tuple[Tensor, Tensor]:
        """Step ``slots`` through ``xs`` ``[n, T, F]`` in order; same result as T calls of :meth:`step`.

        Rows of NaN in all fields (padding before a shorter stream's start) are skipped
        for that stream: its state is left as it was.
        Returns ``(field_err [n, T, F], err [n, T])``.
        """
        xs_t = torch.as_tensor(xs, dtype=self.dtype)
        n, T, F = xs_t.shape
        fe = torch.zeros(n, T, F)
        er = torch.zeros(n, T)
        slots = np.asarray(slots, dtype=np.int64)
        present = ~torch.isnan(xs_t).all(-1)  # [n,T]
        for i in range(T):
            m = present[:, i].numpy()
            if not m.any():
                continue
            if m.all():
                f, e = self.step(slots, xs_t[:, i], None if hold is None else hold[:, i])
                fe[:, i], er[:, i] = f, e
            else:
                f, e = self.step(slots[m], xs_t[m, i], None if hold is None else hold[m, i])
                mt = torch.from_numpy(m)
                fe[mt, i], er[mt, i] = f, e
        return fe, er

    def bytes_per_stream(self) -> dict[str, int]:
        """Model (weights + normalisers) and recurrent-state bytes per slot."""
        per = {k: v[0].numel() * v.element_size() for k, v in self.t.items()}
        model = sum(per[k] for k in ("W", "b", "D", "d", "mean", "std", "cond"))
        state = sum(per[k] for k in ("xh", "c", "win", "pred", "base", "spread", "fast"))
        return {"model": model, "state": state}
