"""The level term's multivariate part: a broken relation between fields scores, and names its field."""

from __future__ import annotations

import numpy as np
import torch

from sentinel.model.bank import Bank
from sentinel.model.cells import Dims, conditional_matrix, init_params


def _bank(shrink: float, cond: np.ndarray | None) -> tuple[Bank, np.ndarray]:
    dims = Dims(2, 4, 2, level_weight=1.0, level_k=1.0, level_shrink=shrink)
    bank = Bank(dims, capacity=1)
    slots = np.array([bank.add()])
    bank.load(slots, init_params(dims, [0]), torch.zeros(1, 2), torch.ones(1, 2),
              None if cond is None else torch.from_numpy(cond))
    return bank, slots


def _training(n: int = 400) -> np.ndarray:
    """Two fields that move together (a pump's current and flow): corr ~0.99."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n)
    return np.stack([a, a + 0.1 * rng.standard_normal(n)], -1)[None].astype(np.float32)


def test_conditional_matrix_reads_fields_alone_when_they_do_not_co_vary() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5000, 3)).astype(np.float32)
    q = conditional_matrix(x, np.ones((1, 5000), bool), 0.1)
    np.testing.assert_allclose(q[0], np.eye(3), atol=0.06)


def test_conditional_matrix_is_the_identity_without_enough_complete_rows() -> None:
    x = np.array([[[1.0, np.nan], [2.0, 1.0], [np.nan, 3.0]]], dtype=np.float32)
    np.testing.assert_array_equal(conditional_matrix(x, np.ones((1, 3), bool), 0.1)[0], np.eye(2))


def test_a_broken_relation_within_each_fields_range_scores_and_names_the_field() -> None:
    x = _training()
    cond = conditional_matrix(x, np.ones(x.shape[:2], bool), 0.1)
    broken = np.array([[0.9, -0.9]], dtype=np.float32)   # each field inside |x| < level_k, relation broken
    kept = np.array([[0.9, 0.9]], dtype=np.float32)      # the same magnitudes, relation kept
    on, slots = _bank(0.1, cond)
    fe_broken, _ = on.step(slots, broken)
    on.reset_state(slots)
    fe_kept, _ = on.step(slots, kept)
    off, slots_off = _bank(-1.0, None)
    fe_off, _ = off.step(slots_off, broken)
    # with the fields alone the level term is 0 for both samples; only the conditional part sees the break
    on_extra = float(fe_broken.sum() - fe_off.sum())
    assert on_extra > 3.0  # shrinkage 0.1 caps the tie at ~0.9: each field's share ~7.7, level (2.8 - 1)^2
    # the kept relation adds (almost) nothing over the fields alone
    off.reset_state(slots_off)
    fe_off_kept, _ = off.step(slots_off, kept)
    assert float(fe_kept.sum() - fe_off_kept.sum()) < 0.5
    # both fields break the relation equally: both carry the added share
    extra = (fe_broken - fe_off)[0].numpy()
    assert extra.min() > 0.3 * extra.max()


def test_the_conditional_part_names_the_field_that_left_its_partner() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal(2000)
    b = rng.standard_normal(2000)
    # fields 0 and 1 move together; field 2 is on its own
    x = np.stack([a, a + 0.1 * rng.standard_normal(2000), b], -1)[None].astype(np.float32)
    cond = conditional_matrix(x, np.ones(x.shape[:2], bool), 0.1)
    dims = Dims(3, 4, 2, level_weight=1.0, level_k=1.0, level_shrink=0.1)
    bank = Bank(dims, capacity=1)
    slots = np.array([bank.add()])
    bank.load(slots, init_params(dims, [0]), torch.zeros(1, 3), torch.ones(1, 3), torch.from_numpy(cond))
    off = Bank(Dims(3, 4, 2, level_weight=1.0, level_k=1.0), capacity=1)
    so = np.array([off.add()])
    off.load(so, init_params(dims, [0]), torch.zeros(1, 3), torch.ones(1, 3))
    sample = np.array([[0.5, 0.5, 0.5]], dtype=np.float32)
    sample[0, 0], sample[0, 1] = 1.0, -1.0  # field 1 leaves field 0's side, each still at level_k
    extra = (bank.step(slots, sample)[0] - off.step(so, sample)[0])[0].numpy()
    assert extra[2] < 0.05  # the independent field is read alone: nothing added
    assert min(extra[0], extra[1]) > 1.0
