from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from diffkd_study.methods.diffkd.diffusion import plots  # noqa: E402
from diffkd_study.metrics.fidelity import memorization_audit  # noqa: E402
from diffkd_study.viz import save_figure  # noqa: E402

IMAGES = [np.full((8, 8), v, np.uint8) for v in (10, 120, 250)]


def test_sample_pairs_grid_shape_and_titles(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    rows = [plots.PairRow("benign", IMAGES[:2], IMAGES[1:3], [mask, mask], [mask, None]),
            plots.PairRow("malignant", IMAGES[:1], IMAGES[:1])]
    fig = plots.plot_sample_pairs(rows)
    axes = np.array(fig.axes).reshape(2, 4)
    assert [axes[0, i].get_title() for i in range(4)] == ["real", "synthetic", "real", "synthetic"]
    assert axes[0, 0].get_ylabel() == "benign" and axes[1, 0].get_ylabel() == "malignant"
    assert not axes[1, 2].axison and not axes[1, 3].axison  # the shorter row leaves its cells blank
    assert len(axes[0, 0].collections) == 1  # the mask outline
    assert save_figure(fig, tmp_path, "grid").is_file() and (tmp_path / "grid.svg").is_file()
    plt.close(fig)
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_sample_pairs([])


def test_guidance_sweep_draws_each_scale_and_the_floor():
    rows = []
    for extractor in ("A", "B"):
        for scale, fid in ((0.0, 90.0), (1.0, 60.0), (2.0, 50.0)):
            rows.append({"set": f"guidance {scale:g}", "extractor": extractor, "guidance": scale, "fid": fid,
                         "kid_mean": fid / 1000, "kid_ci_low": fid / 1000 - 0.001, "kid_ci_high": fid / 1000 + 0.002, "n_generated": 8})
        rows.append({"set": "real training (floor)", "extractor": extractor, "guidance": np.nan, "fid": 20.0,
                     "kid_mean": 0.002, "kid_ci_low": 0.001, "kid_ci_high": 0.003, "n_generated": 8})
    fig = plots.plot_guidance_sweep(pd.DataFrame(rows))
    assert len(fig.axes) == 4
    top = fig.axes[0]
    line = top.get_lines()[0]
    assert list(line.get_xdata()) == [0.0, 1.0, 2.0] and list(line.get_ydata()) == [90.0, 60.0, 50.0]
    assert list(top.get_lines()[1].get_ydata()) == [20.0, 20.0]  # the floor
    plt.close(fig)
    with pytest.raises(ValueError, match="lacks columns"):
        plots.plot_guidance_sweep(pd.DataFrame({"set": ["x"]}))


def test_histograms_and_closest_pairs():
    r = np.random.default_rng(0)
    training = r.integers(0, 256, (6, 16, 16), dtype=np.uint8)
    audit = memorization_audit(np.concatenate([training[:1], r.integers(0, 256, (2, 16, 16), dtype=np.uint8)]),
                               training, extractor=None, pixel_size=8)
    fig = plots.plot_nn_histograms(audit.spaces)
    assert len(fig.axes) == 1 and fig.axes[0].get_lines()[0].get_xdata()[0] == audit.spaces["pixel"].threshold
    plt.close(fig)
    fig = plots.plot_closest_pairs(IMAGES, IMAGES[::-1], ["a", "b", "c"])
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a"
    plt.close(fig)
    with pytest.raises(ValueError, match="same, non-zero number"):
        plots.plot_closest_pairs(IMAGES, IMAGES[:2], ["a", "b", "c"])


def test_captions_need_exactly_their_fields():
    text = plots.caption("nn_histograms", percentile=1.0, n_flagged=2, n_synthetic=40)
    assert "closest 1% of real-vs-real distances" in text and "2 of 40 were flagged" in text
    with pytest.raises(ValueError, match="missing"):
        plots.caption("loss_curve", block=5)
    with pytest.raises(ValueError, match="no caption"):
        plots.caption("nope")
