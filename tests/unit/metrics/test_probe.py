"""Linear probe: C chosen on validation only, clustered CIs for a binary task, macro AUC for a multiclass one."""

from __future__ import annotations

import numpy as np
import pytest

from diffkd_study.metrics.probe import PROBE_C, linear_probe


def _split(rng: np.random.Generator, n: int, signal: float, classes: int = 2):
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 5))
    x[:, 0] += signal * y
    return x, y


def test_the_probe_scores_held_out_splits_with_patient_clustered_intervals():
    rng = np.random.default_rng(0)
    parts = {s: _split(rng, n, 1.5) for s, n in (("train", 120), ("val", 60), ("test", 80))}
    groups = {s: np.repeat(np.arange(len(y) // 2), 2).astype(str) for s, (_, y) in parts.items()}
    table = linear_probe({s: x for s, (x, _) in parts.items()}, {s: y for s, (_, y) in parts.items()}, groups,
                         representation="toy")
    assert list(table["split"]) == ["val", "test"] and set(table["representation"]) == {"toy"}
    row = table.set_index("split").loc["test"]
    assert row["C"] in PROBE_C and row["patients"] == 40 and 0.75 < row["auc"] < 1.0
    assert row["ci_low"] < row["auc"] < row["ci_high"]


def test_c_is_chosen_on_validation_and_the_test_split_never_changes_it():
    rng = np.random.default_rng(1)
    parts = {s: _split(rng, 90, 1.0, classes=3) for s in ("train", "val")}
    features, labels = {s: x for s, (x, _) in parts.items()}, {s: y for s, (_, y) in parts.items()}
    groups = {s: np.arange(len(y)).astype(str) for s, y in labels.items()}
    base = linear_probe(features, labels, groups)
    x_test, y_test = _split(rng, 60, 1.0, classes=3)
    for shuffled in (y_test, rng.permutation(y_test)):
        table = linear_probe({**features, "test": x_test}, {**labels, "test": shuffled},
                             {**groups, "test": np.arange(60).astype(str)})
        assert table["C"].iloc[0] == base["C"].iloc[0]  # the test labels play no part in the choice
        assert np.isnan(table["ci_low"]).all() and table["auc"].between(0, 1).all()  # multiclass: macro AUC
    with pytest.raises(ValueError, match="'val' split is required"):
        linear_probe({"train": features["train"]}, {"train": labels["train"]}, {"train": groups["train"]})
