"""Decision curve analysis on a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from diffkd_study.metrics.dca import (
    TREAT_ALL,
    TREAT_NONE,
    decision_curves,
    net_benefit,
    net_benefit_treat_all,
)

# Five patients, two with disease. At pt = 0.3 the model treats 0.9, 0.4, 0.6: TP 2, FP 1, so
# NB = 2/5 - 1/5 * 0.3/0.7 = 0.4 - 3/35. At pt = 0.5 it treats 0.9, 0.6: TP 1, FP 1, so
# NB = 1/5 - 1/5 * 1 = 0. Treat all: 0.4 - 0.6 * 3/7 at 0.3, 0.4 - 0.6 at 0.5.
Y = np.array([1, 1, 0, 0, 0])
P = np.array([0.9, 0.4, 0.6, 0.2, 0.1])


def test_net_benefit_by_hand():
    np.testing.assert_allclose(net_benefit(Y, P, [0.3, 0.5]), [0.4 - 3 / 35, 0.0])
    np.testing.assert_allclose(net_benefit_treat_all(Y, [0.3, 0.5]), [0.4 - 0.6 * 3 / 7, -0.2])


def test_threshold_is_inclusive():
    # A patient whose risk equals the threshold is treated.
    assert net_benefit([1, 0], [0.4, 0.1], [0.4])[0] == pytest.approx(0.5)


def test_tidy_frame_with_reference_strategies():
    frame = decision_curves(Y, {"model": P, "coin": np.full(5, 0.5)}, thresholds=[0.3, 0.5])
    assert set(frame["model"]) == {"model", "coin", TREAT_ALL, TREAT_NONE}
    assert list(frame.columns) == ["model", "threshold", "net_benefit", "tp", "fp", "n", "prevalence"]
    model = frame[frame["model"] == "model"].set_index("threshold")
    assert (model.loc[0.3, "tp"], model.loc[0.3, "fp"]) == (2, 1)
    np.testing.assert_allclose(model["net_benefit"], [0.4 - 3 / 35, 0.0])
    treat_all = frame[frame["model"] == TREAT_ALL]["net_benefit"].to_numpy()
    np.testing.assert_allclose(treat_all, net_benefit_treat_all(Y, [0.3, 0.5]))
    # Predicting 0.5 for everyone treats everyone at pt <= 0.5: the same as treat-all.
    np.testing.assert_allclose(frame[frame["model"] == "coin"]["net_benefit"], treat_all)
    assert (frame[frame["model"] == TREAT_NONE]["net_benefit"] == 0).all()


def test_default_grid_and_validation():
    assert net_benefit(Y, P).shape == (99,)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        net_benefit(Y, P, [0.0, 0.5])
    with pytest.raises(ValueError, match="reserved"):
        decision_curves(Y, {TREAT_ALL: P})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decision_curves(Y, {"logits": P * 10})
