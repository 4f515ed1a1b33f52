"""Epoch plans, class weights and set concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkd_study.training.data import EpochPlan, class_weights, class_weights_from_counts, concat
from tests.unit.training.conftest import toy_set


def test_epoch_plan_is_a_function_of_seed_and_epoch():
    data = toy_set(20, synthetic=8)
    plan = EpochPlan.for_set(data, 0.5, seed=3)
    assert np.array_equal(plan.rows(2), EpochPlan.for_set(data, 0.5, seed=3).rows(2))
    assert not np.array_equal(plan.rows(2), plan.rows(3))
    rows = plan.rows(0)
    real = rows[~data.synthetic.numpy()[rows]]
    assert sorted(real.tolist()) == list(range(12))  # every real row exactly once
    assert plan.n_synthetic == 6 and (data.synthetic.numpy()[rows]).sum() == 6
    assert len(set(rows[data.synthetic.numpy()[rows]].tolist())) == 6  # without replacement while the set lasts


def test_epoch_plan_draws_with_replacement_beyond_the_synthetic_set():
    data = toy_set(12, synthetic=2)
    plan = EpochPlan.for_set(data, 2.0, seed=0)
    rows = plan.rows(1)
    assert plan.n_synthetic == 20 and len(rows) == 30
    assert set(rows[data.synthetic.numpy()[rows]].tolist()) == {10, 11}


def test_synthetic_ratio_without_synthetic_images_is_an_error():
    with pytest.raises(ValueError, match="no synthetic images"):
        EpochPlan.for_set(toy_set(10), 0.5, seed=0)


def test_rank_batches_partition_each_global_batch():
    plan = EpochPlan.for_set(toy_set(23), 0.0, seed=1)
    one = plan.batches(0, 8, 0, 1)
    two = [plan.batches(0, 4, r, 2) for r in range(2)]
    assert [len(b) for b in one] == [8, 8, 7]
    for i, batch in enumerate(one):
        assert np.array_equal(np.concatenate([two[0][i], two[1][i]]), batch)
    # a last global batch leaving a rank fewer than 2 rows is dropped
    assert [len(b) for b in EpochPlan.for_set(toy_set(19), 0.0, 0).batches(0, 8, 0, 1)] == [8, 8, 3]
    assert len(EpochPlan.for_set(toy_set(17), 0.0, 0).batches(0, 8, 0, 1)) == 2


def test_class_weights_from_expected_counts_match_the_tensor_form_and_name_bad_input():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    for scheme in ("balanced", "frequency"):
        assert class_weights(labels, 3, scheme).tolist() == class_weights_from_counts(
            np.array([3, 2, 1]), scheme).astype(np.float32).tolist()
    # fractional (expected) counts: 2 real + 1.5 synthetic rows of class 1
    assert class_weights_from_counts(np.array([4.0, 3.5]), "balanced").tolist() == pytest.approx([7.5 / 8, 7.5 / 7])
    assert class_weights_from_counts(np.array([4.0, 3.5]), "frequency").tolist() == [1.875, 2.143]
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training images"):
        class_weights_from_counts(np.array([4, 0]), "balanced")
    with pytest.raises(ValueError, match="class weighting must be one of"):
        class_weights_from_counts(np.array([4, 2]), "inverse")


def test_class_weights_golden():
    labels = torch.tensor([0, 0, 0, 1])
    assert class_weights(labels, 2, "balanced").tolist() == pytest.approx([4 / 6, 2.0])
    assert class_weights(labels, 2, "frequency").tolist() == pytest.approx([1.333, 4.0])
    assert class_weights(labels, 2, "none") is None
    with pytest.raises(ValueError, match="no training images"):
        class_weights(torch.tensor([0, 0]), 2)


def test_concat_keeps_flags_and_refuses_mismatched_sets():
    a, b = toy_set(6), toy_set(4, seed=1, synthetic=4)
    both = concat([a, b])
    assert len(both) == 10 and both.synthetic.tolist() == [False] * 6 + [True] * 4
    with pytest.raises(ValueError, match="cannot mix"):
        concat([a, toy_set(4, size=8)])
