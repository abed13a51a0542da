"""Reduced-precision weights (``model.weight_dtype``): W stored as bf16/fp16, the step still float32
elsewhere; errors stay close to the float32 bank's and finite over a long run, with gaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sentinel.config import load_config_text
from sentinel.model.bank import Bank
from sentinel.model.cells import Dims, init_params
from sentinel.runtime.engine import Engine


def pair(dtype: str, F: int = 2, n: int = 6) -> tuple[Bank, Bank, np.ndarray]:
    dims = Dims(F, 16, 4)
    banks = []
    for wd in ("float32", dtype):
        b = Bank(dims, capacity=8, weight_dtype=wd)
        slots = np.array([b.add() for _ in range(n)])
        p = init_params(dims, list(range(n)))
        b.load(slots, p, torch.zeros(n, F), torch.ones(n, F))
        banks.append(b)
    return banks[0], banks[1], slots


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_weights_are_stored_reduced_and_score_close_to_float32(dtype: str) -> None:
    ref, red, slots = pair(dtype)
    assert red.t["W"].dtype == getattr(torch, dtype) and red.t["c"].dtype == torch.float32
    assert red.params(slots)["W"].dtype == torch.float32
    assert red.bytes_per_stream()["model"] < ref.bytes_per_stream()["model"]
    rng = np.random.default_rng(0)
    x = (np.sin(np.arange(400)[None, :, None] / 7.0 + rng.uniform(0, 6, (len(slots), 1, 2)))
         + 0.1 * rng.standard_normal((len(slots), 400, 2))).astype(np.float32)
    x[:, 100:110, 0] = np.nan  # a missing field for a while
    _fe, e_ref = ref.run_sequence(slots, x)
    _fe, e_red = red.run_sequence(slots, x)
    assert torch.isfinite(e_red).all()
    rel = ((e_red - e_ref).abs() / e_ref.abs().clamp(min=1e-3)).median().item()
    assert rel < (0.05 if dtype == "bfloat16" else 0.01)


def test_the_config_knob_reaches_the_bank_and_bfloat16_is_the_default() -> None:
    e = Engine(load_config_text("model: {weight_dtype: float32}\n", source="t.yaml"))
    assert e._group(1).bank.t["W"].dtype == torch.float32
    assert Engine(load_config_text("{}\n", source="t.yaml"))._group(1).bank.t["W"].dtype == torch.bfloat16
