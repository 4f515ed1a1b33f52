"""Evaluation figures: each plot draws the numbers of the eval library, with the expected artists."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from diffkd_study import viz as plots
from diffkd_study.metrics.calibration import brier_score, calibration_summary
from diffkd_study.metrics.dca import TREAT_ALL, TREAT_NONE, decision_curves, net_benefit_treat_all
from diffkd_study.metrics.roc import auc_delong, roc_curve
from diffkd_study.metrics.roc_band import roc_confidence_band, roc_summary
from diffkd_study.reader_study import orh_analysis, simulate_ratings

matplotlib.use("Agg")

N_POS, N_NEG = 48, 72


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(7)
    y = np.r_[np.ones(N_POS, int), np.zeros(N_NEG, int)]
    strong = y * 1.6 + rng.normal(size=y.size)
    weak = y * 0.8 + rng.normal(size=y.size)
    return y, strong, weak


def _probabilities(score):
    return 1 / (1 + np.exp(-score))


def _legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def _errorbars(ax):
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def _points(container, axis="x"):
    """Marker positions of an errorbar (matplotlib keeps them as an object array)."""
    line = container.lines[0]
    return np.asarray(line.get_xdata() if axis == "x" else line.get_ydata(), dtype=float)


def _reader_table(simulated):
    table = pd.DataFrame(
        {
            "reader_id": [f"r{k}" for k in range(8)],
            "reader_group": ["junior"] * 4 + ["senior"] * 4,
            "fpr": [0.30, 0.25, 0.35, 0.20, 0.15, 0.10, 0.12, 0.18],
            "sensitivity": [0.70, 0.65, 0.75, 0.60, 0.85, 0.80, 0.82, 0.88],
        }
    )
    for col in ("fpr", "sensitivity"):
        table[f"{col}_ci_low"] = table[col] - 0.05
        table[f"{col}_ci_high"] = table[col] + 0.07
    if simulated:
        table["simulated"] = 1
    return table


# ----------------------------------------------------------------------------------------------
# ROC
# ----------------------------------------------------------------------------------------------


def test_roc_curves_bands_legend_and_simulated_readers(cohort):
    y, strong, weak = cohort
    readers = _reader_table(simulated=True)
    summaries = {"teacher": roc_summary(y, strong, n_resamples=200), "student": roc_summary(y, weak, n_resamples=200)}
    fig = plots.plot_roc(summaries, reader_points=readers)
    ax = fig.axes[0]
    texts = _legend_texts(ax.get_legend())
    assert texts[0] == plots.auc_label("teacher", auc_delong(y, strong))
    assert (
        texts[0].startswith("teacher: AUC 0.") and "95% CI" in texts[0] and "n=120 (48 positive)" in texts[0]
    )
    assert "simulated readers: junior (n=4)" in texts and "simulated readers: senior (n=4)" in texts
    assert "chance (AUC 0.5)" in texts and any("pointwise bootstrap band (B=200)" in t for t in texts)

    curve = ax.get_lines()[0]
    expected = roc_curve(y, strong)
    np.testing.assert_allclose(curve.get_xdata(), expected.fpr)
    np.testing.assert_allclose(curve.get_ydata(), expected.tpr)

    fills = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(fills) == 2
    band = roc_confidence_band(y, strong, n_resamples=200, seed=0)
    band_y = fills[0].get_paths()[0].vertices[:, 1]
    assert band_y.min() == pytest.approx(band.tpr_low.min())
    assert band_y.max() == pytest.approx(band.tpr_high.max())

    reader_bars = [c for c in _errorbars(ax) if c.get_label().startswith("simulated readers")]
    assert sum(len(_points(c)) for c in reader_bars) == len(readers)
    junior = next(c for c in reader_bars if "junior" in c.get_label())
    np.testing.assert_allclose(_points(junior), readers["fpr"][:4])
    assert junior.has_xerr and junior.has_yerr
    assert ax.get_aspect() == 1.0


def test_roc_without_bands_or_intervals_and_real_readers(cohort):
    y, strong, _ = cohort
    fig = plots.plot_roc({"teacher": roc_summary(y, strong, band=False)}, ci=False, reader_points=_reader_table(False))
    ax = fig.axes[0]
    texts = _legend_texts(ax.get_legend())
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert "CI" not in texts[0] and "AUC 0." in texts[0]
    assert "readers: junior (n=4)" in texts and not any("simulated" in t for t in texts)
    assert not any("band" in t for t in texts)
    assert all(not c.has_xerr and not c.has_yerr for c in _errorbars(ax))


def test_roc_reader_points_from_specificity_and_one_condition_only(cohort):
    y, strong, _ = cohort
    points = pd.DataFrame({"reader_id": ["a", "b"], "sensitivity": [0.8, 0.7], "specificity": [0.9, 0.6]})
    summary = roc_summary(y, strong, band=False)
    fig = plots.plot_roc({"m": summary}, reader_points=points, simulated_readers=True)
    (bars,) = _errorbars(fig.axes[0])
    np.testing.assert_allclose(_points(bars), [0.1, 0.4])
    assert bars.get_label() == "simulated readers: readers (n=2)"
    two = pd.concat([points.assign(treatment="unaided"), points.assign(treatment="aided")])
    with pytest.raises(ValueError, match="several reading conditions"):
        plots.plot_roc({"m": summary}, reader_points=two)


def test_roc_of_a_constant_score_model_is_the_diagonal_and_says_so(cohort):
    y, strong, _ = cohort
    summaries = {"constant": roc_summary(y, np.full(y.size, 0.28), n_resamples=50),
                 "teacher": roc_summary(y, strong, n_resamples=50)}
    fig = plots.plot_roc(summaries)
    ax = fig.axes[0]
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0, 1])
    np.testing.assert_allclose(line.get_ydata(), [0, 1])
    texts = _legend_texts(ax.get_legend())
    assert texts[0] == f"constant: AUC 0.500 (every score equal: no discrimination); n={y.size} ({N_POS} positive)"
    assert texts[1].startswith("teacher: AUC ") and "95% CI" in texts[1]


def test_roc_draws_into_a_given_axes_and_keeps_global_style(cohort):
    y, strong, _ = cohort
    fig, ax = plt.subplots()
    assert plots.plot_roc({"m": roc_summary(y, strong, band=False)}, ax=ax) is fig
    assert len(ax.get_lines()) == 2  # the curve and the chance diagonal
    assert plt.rcParams["axes.spines.top"] == matplotlib.rcParamsDefault["axes.spines.top"]
    with pytest.raises(ValueError, match="at least one model"):
        plots.plot_roc({})


# ----------------------------------------------------------------------------------------------
# Forest plot
# ----------------------------------------------------------------------------------------------


def _forest_table():
    rows = []
    for model, shift in (("teacher", 0.05), ("student", 0.0)):
        for test_set, auc, n, n_pos in (("internal test", 0.86, 120, 48), ("centre B", 0.80, 60, 20)):
            rows.append(
                dict(
                    model=model,
                    test_set=test_set,
                    auc=auc + shift,
                    ci_low=auc + shift - 0.06,
                    ci_high=auc + shift + 0.05,
                    n=n,
                    n_pos=n_pos,
                )
            )
    rows.append(
        dict(model="student", test_set="centre C", auc=np.nan, ci_low=np.nan, ci_high=np.nan, n=9, n_pos=1)
    )
    return pd.DataFrame(rows)


def test_auc_forest_rows_text_and_order():
    table = _forest_table()
    fig = plots.plot_auc_forest(table)
    ax, text_ax = fig.axes
    bars = _errorbars(ax)
    assert [c.get_label() for c in bars] == ["teacher", "student"]
    plotted = np.concatenate([_points(c) for c in bars])
    np.testing.assert_allclose(np.sort(plotted), np.sort(table["auc"].dropna()))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["internal test", "centre B", "centre C"]
    texts = [t.get_text() for t in text_ax.texts]
    assert "0.910 (0.850\u20130.960)" in texts and "120 (48)" in texts
    assert "not estimable" in texts and "9 (1)" in texts
    assert _legend_texts(fig.legends[0]) == ["teacher", "student"]


def test_auc_forest_shows_a_model_without_predictions_as_not_applicable():
    table = pd.concat([_forest_table(), pd.DataFrame([{
        "model": "clinical", "test_set": "centre C", "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan,
        "n": 0, "n_pos": 0}])], ignore_index=True)
    fig = plots.plot_auc_forest(table)
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts.count("not applicable") == 1 and "\u2013" in texts and "0 (0)" not in texts
    assert [c.get_label() for c in _errorbars(fig.axes[0])] == ["teacher", "student", "clinical"]


def test_draw_not_applicable_marks_an_empty_panel():
    fig, ax = plt.subplots()
    plots.draw_not_applicable(ax, "clinical\ncentre D", "no conditions recorded")
    assert not ax.axison and ax.get_title() == "clinical\ncentre D"
    assert ax.texts[0].get_text() == "not applicable\n(no conditions recorded)"


def test_auc_forest_rejects_duplicates_and_missing_columns():
    table = _forest_table()
    with pytest.raises(ValueError, match="more than once"):
        plots.plot_auc_forest(pd.concat([table, table.iloc[[0]]]))
    with pytest.raises(ValueError, match="n_pos"):
        plots.plot_auc_forest(table.drop(columns="n_pos"))


def test_auc_forest_accepts_other_column_names():
    table = _forest_table().rename(columns={"test_set": "center"})
    fig = plots.plot_auc_forest(table, test_set_col="center")
    assert len(fig.axes[0].get_yticklabels()) == 3


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def test_calibration_reliability_histogram_and_legend(cohort):
    y, strong, weak = cohort
    probs = {"teacher": _probabilities(strong), "student": _probabilities(weak)}
    fig = plots.plot_calibration({m: calibration_summary(y, p, n_bins=8) for m, p in probs.items()})
    ax, hist_ax = fig.axes
    assert "n=120, 48 positive" in ax.get_title()
    texts = _legend_texts(fig.legends[0])
    assert texts[0].startswith("teacher\nintercept ") and "slope " in texts[0]
    assert f"Brier {brier_score(y, probs['teacher']).brier:.3f}" in texts[0]
    assert texts[-1] == "ideal calibration"
    bars = _errorbars(ax)
    assert len(bars) == 2 and all(len(_points(c)) == 8 for c in bars)
    assert len(hist_ax.patches) == 2  # one step outline per model
    assert hist_ax.get_xlabel() == "predicted probability"


def test_calibration_of_a_constant_score_model(cohort):
    # The reliability diagram of a constant score has one bin (it had none: KeyError 'mean_predicted').
    y, strong, _ = cohort
    probs = {"constant": np.full(y.size, 0.28), "teacher": _probabilities(strong)}
    fig = plots.plot_calibration({m: calibration_summary(y, p) for m, p in probs.items()})
    ax = fig.axes[0]
    constant = _errorbars(ax)[0]
    np.testing.assert_allclose(_points(constant), [0.28])
    np.testing.assert_allclose(_points(constant, "y"), [N_POS / (N_POS + N_NEG)])
    curves = [line for line in ax.lines if line.get_linestyle() != "None"]  # error bars draw markers only
    assert len(curves) == 2  # the ideal diagonal and the teacher's LOWESS curve: none through one point
    texts = _legend_texts(fig.legends[0])
    assert "slope not estimable (every prediction is 0.28)" in texts[0] and "slope 0" not in texts[0]


def test_calibration_reports_an_inestimable_slope():
    y = np.array([0, 0, 1, 1])
    fig = plots.plot_calibration({"separating": calibration_summary(y, np.array([0.1, 0.2, 0.8, 0.9]), n_bins=2)})
    assert "slope not estimable" in _legend_texts(fig.legends[0])[0]


# ----------------------------------------------------------------------------------------------
# Decision curves
# ----------------------------------------------------------------------------------------------


def test_decision_curves_models_and_reference_strategies(cohort):
    y, strong, weak = cohort
    thresholds = np.round(np.arange(0.05, 0.95, 0.05), 2)
    dca = decision_curves(y, {"teacher": _probabilities(strong), "student": _probabilities(weak)}, thresholds)
    fig = plots.plot_decision_curves(dca)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"teacher", "student", TREAT_ALL, TREAT_NONE}
    teacher = dca[dca["model"] == "teacher"]
    np.testing.assert_allclose(lines["teacher"].get_xdata(), 100 * teacher["threshold"])
    np.testing.assert_allclose(lines["teacher"].get_ydata(), teacher["net_benefit"])
    np.testing.assert_allclose(lines[TREAT_NONE].get_ydata(), 0)
    assert ax.get_legend().get_title().get_text() == "n=120, prevalence 40.0%"
    assert ax.get_xlabel() == "threshold probability (%)"


def test_decision_curves_of_a_constant_score_model(cohort):
    # Treating everyone while pt <= 0.28 (net benefit of treat all), no one above it (0).
    y, _, _ = cohort
    curves = decision_curves(y, {"constant": np.full(y.size, 0.28)})
    part = curves[curves["model"] == "constant"]
    treat_all = net_benefit_treat_all(y, part["threshold"])
    expected = np.where(part["threshold"] <= 0.28, treat_all, 0.0)
    np.testing.assert_allclose(part["net_benefit"], expected)
    fig = plots.plot_decision_curves(curves)
    assert _legend_texts(fig.axes[0].get_legend())[0] == "constant"


def test_decision_curves_compute_treat_all_when_absent(cohort):
    y, strong, _ = cohort
    thresholds = [0.1, 0.2, 0.3]
    dca = decision_curves(y, {"m": _probabilities(strong)}, thresholds)
    fig = plots.plot_decision_curves(dca[dca["model"] == "m"])
    treat_all = next(line for line in fig.axes[0].get_lines() if line.get_label() == TREAT_ALL)
    np.testing.assert_allclose(treat_all.get_ydata(), net_benefit_treat_all(y, thresholds))
    with pytest.raises(ValueError, match="one test set"):
        plots.plot_decision_curves(pd.concat([dca, dca]))


# ----------------------------------------------------------------------------------------------
# Confusion matrix
# ----------------------------------------------------------------------------------------------

Y_TRUE = [0, 0, 0, 1, 1]
Y_PRED = [0, 1, 0, 1, 0]
NAMES = {0: "benign", 1: "malignant"}


def test_confusion_counts_and_row_percentages():
    fig = plots.plot_confusion(Y_TRUE, Y_PRED, NAMES)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), [[2, 1], [1, 1]])
    assert [t.get_text() for t in ax.texts] == ["2\n(66.7%)", "1\n(33.3%)", "1\n(50.0%)", "1\n(50.0%)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["benign\n(n=3)", "malignant\n(n=2)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["benign", "malignant"]
    assert "n=5" in ax.get_title()


@pytest.mark.parametrize(
    ("normalize", "colours", "first_text"),
    [
        ("true", [[2 / 3, 1 / 3], [0.5, 0.5]], "2\n(66.7%)"),
        ("pred", [[2 / 3, 0.5], [1 / 3, 0.5]], "2\n(66.7%)"),
        ("all", [[0.4, 0.2], [0.2, 0.2]], "2\n(40.0%)"),
    ],
)
def test_confusion_normalisation(normalize, colours, first_text):
    fig = plots.plot_confusion(Y_TRUE, Y_PRED, NAMES, normalize=normalize)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), colours)
    assert ax.texts[0].get_text() == first_text


def test_confusion_rejects_values_outside_the_labels():
    with pytest.raises(ValueError, match="not among labels"):
        plots.plot_confusion(["benign", "other"], ["benign", "benign"], ["benign", "malignant"])
    with pytest.raises(ValueError, match="normalize"):
        plots.plot_confusion(Y_TRUE, Y_PRED, NAMES, normalize="rows")


# ----------------------------------------------------------------------------------------------
# Loss curves
# ----------------------------------------------------------------------------------------------


def _history(seeds=(0,), terms=("ce", "kd_kl", "total")):
    rows = []
    for seed in seeds:
        for split in ("val", "train"):
            for epoch in range(1, 6):
                for k, term in enumerate(terms):
                    rows.append(
                        dict(
                            epoch=epoch,
                            seed=seed,
                            split=split,
                            term=term,
                            value=(k + 1) / epoch + 0.1 * seed + (split == "val") * 0.05,
                        )
                    )
    return pd.DataFrame(rows)


def test_loss_curves_one_panel_per_term_and_a_line_per_split():
    history = _history()
    fig = plots.plot_loss_curves(history)
    assert [ax.get_title() for ax in fig.axes] == ["total", "ce", "kd_kl"]
    for ax in fig.axes:
        assert len(ax.get_lines()) == 2
    train_total = fig.axes[0].get_lines()[0]
    expected = history[(history["term"] == "total") & (history["split"] == "train")]
    np.testing.assert_allclose(train_total.get_ydata(), expected["value"])
    assert _legend_texts(fig.legends[0]) == ["train", "val"]
    assert fig.axes[0].get_xlabel().startswith("epoch")


def test_loss_curves_seed_mean_and_spread_and_layout():
    history = _history(seeds=(0, 1, 2), terms=("total", "ce", "kd_kl", "feature"))
    fig = plots.plot_loss_curves(history)
    assert len(fig.axes) == 4  # a 2 x 3 grid with the two unused panels removed
    first = fig.axes[0]
    assert len([c for c in first.collections if isinstance(c, PolyCollection)]) == 2
    train = history[(history["term"] == "total") & (history["split"] == "train")]
    np.testing.assert_allclose(first.get_lines()[0].get_ydata(), train.groupby("epoch")["value"].mean())
    assert fig.legends[0].get_title().get_text() == "mean \u00b1 1 SD over 3 seeds"
    with pytest.raises(ValueError, match="split"):
        plots.plot_loss_curves(history.drop(columns="split"))


# ----------------------------------------------------------------------------------------------
# Reader study
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orh():
    truth = np.r_[np.ones(30, int), np.zeros(40, int)]
    scores = simulate_ratings(truth, n_treatments=2, rng=np.random.default_rng(3)).astype(float)
    readers = [f"sim-{g}-{k}" for g in ("junior", "senior") for k in range(1, 5)]
    result = orh_analysis(scores, truth, treatments=("unaided", "aided"), readers=readers)
    return result, {r: r.split("-")[1] for r in readers}


def _summaries(ax):
    return [c for c in _errorbars(ax) if c.lines[0].get_marker() == "_"]


def test_reader_study_from_orh_result(orh, cohort):
    result, groups = orh
    y, strong, _ = cohort
    model = auc_delong(y, strong)
    fig = plots.plot_reader_study(result, reader_groups=groups, model_auc={"student": model}, simulated=True)
    assert [ax.get_title() for ax in fig.axes] == ["reading condition: unaided", "reading condition: aided"]
    for i, ax in enumerate(fig.axes):
        readers = [c for c in _errorbars(ax) if c.lines[0].get_marker() != "_"]
        assert sum(len(_points(c, "y")) for c in readers) == len(result.readers)
        plotted = np.sort(np.concatenate([_points(c, "y") for c in readers]))
        np.testing.assert_allclose(plotted, np.sort(result.auc[i]))
        # junior, senior and the all-readers column; the last carries the ORH interval.
        summaries = _summaries(ax)
        assert len(summaries) == 3
        all_readers = summaries[-1]
        assert _points(all_readers, "y")[0] == pytest.approx(result.treatment_auc[i])
        whisker = all_readers.lines[2][0].get_segments()[0][:, 1]
        row = result.single_treatment.iloc[i]
        np.testing.assert_allclose(sorted(whisker), [row.ci_low, row.ci_high])
        assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(model.auc)
    texts = _legend_texts(fig.legends[0])
    assert texts[0] == plots.auc_label("student", model)
    assert "simulated readers: junior (n=4)" in texts
    assert any(t.startswith("reader bars: 95% Wald CI (jackknife") for t in texts)


def test_reader_study_from_a_tidy_table():
    table = pd.DataFrame(
        {
            "reader_id": ["a", "b", "c"],
            "reader_group": ["junior", "junior", "senior"],
            "auc": [0.70, 0.80, 0.90],
            "simulated": 1,
        }
    )
    fig = plots.plot_reader_study(table, title=None)
    (ax,) = fig.axes
    summaries = _summaries(ax)
    assert [_points(c, "y")[0] for c in summaries] == pytest.approx([0.75, 0.90])
    assert all(not c.has_yerr for c in _errorbars(ax))
    texts = _legend_texts(fig.legends[0])
    assert "simulated readers: junior (n=2)" in texts and "group mean AUC" in texts
    with pytest.raises(ValueError, match="no group for reader"):
        plots.plot_reader_study(table, reader_groups={"a": "junior"})


# ----------------------------------------------------------------------------------------------
# Saving, captions, style
# ----------------------------------------------------------------------------------------------


def test_save_figure_writes_png_and_reproducible_svg(tmp_path, cohort):
    y, strong, _ = cohort
    saved = []
    for run in ("first", "second"):  # the same figure drawn twice, as by a re-executed notebook
        fig = plots.plot_roc({"m": roc_summary(y, strong, band=False)})
        saved.append(plots.save_figure(fig, tmp_path / run, "roc"))
    png = saved[0]
    assert png == tmp_path / "first" / "roc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = [path.with_suffix(".svg").read_bytes() for path in saved]
    assert b"<svg" in svg[0] and b"<dc:date>" not in svg[0]
    assert svg[0] == svg[1]
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["roc.png", "roc.svg"]
    for bad in ("roc.png", "sub/roc", ""):
        with pytest.raises(ValueError, match="name"):
            plots.save_figure(fig, tmp_path, bad)


def test_save_figure_uses_unique_temporary_names_and_the_umask_mode(tmp_path, cohort, monkeypatch):
    y, strong, _ = cohort
    fig = plots.plot_roc({"m": roc_summary(y, strong, band=False)})
    written = []
    draw = fig.savefig

    def recording(path, **kwargs):
        written.append(Path(path))
        assert not Path(path).name.startswith(".roc.png.partial")
        draw(path, **kwargs)

    monkeypatch.setattr(fig, "savefig", recording)
    plots.save_figure(fig, tmp_path, "roc")
    plots.save_figure(fig, tmp_path, "roc")
    assert len(set(written)) == 4 and {p.parent for p in written} == {tmp_path}  # never one name twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "roc.svg"]
    umask = os.umask(0)
    os.umask(umask)
    for suffix in (".png", ".svg"):
        assert stat.S_IMODE((tmp_path / f"roc{suffix}").stat().st_mode) == 0o666 & ~umask


def test_save_figure_leaves_nothing_behind_when_a_format_fails(tmp_path, cohort, monkeypatch):
    y, strong, _ = cohort
    fig = plots.plot_roc({"m": roc_summary(y, strong, band=False)})
    draw = fig.savefig

    def failing_svg(path, **kwargs):
        if kwargs.get("format") == "svg":
            raise OSError("disk full")
        draw(path, **kwargs)

    monkeypatch.setattr(fig, "savefig", failing_svg)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, tmp_path, "roc")
    assert list(tmp_path.iterdir()) == []


PLOT_FUNCTIONS = {
    "roc": plots.plot_roc,
    "auc_forest": plots.plot_auc_forest,
    "calibration": plots.plot_calibration,
    "decision_curves": plots.plot_decision_curves,
    "confusion": plots.plot_confusion,
    "loss_curves": plots.plot_loss_curves,
    "reader_study": plots.plot_reader_study,
}


def test_every_plot_has_a_caption_in_its_docstring():
    assert set(plots.CAPTIONS) == set(PLOT_FUNCTIONS)
    for kind, func in PLOT_FUNCTIONS.items():
        assert plots.CAPTIONS[kind] in func.__doc__


def test_caption_fills_every_placeholder():
    text = plots.caption("roc", test_set="the internal test set", n=120, n_pos=48, condition="malignancy")
    assert "{" not in text and "(120 cases, 48 with malignancy)" in text
    with pytest.raises(ValueError, match="missing \\['n_pos'\\]"):
        plots.caption("roc", test_set="x", n=1, condition="y")
    with pytest.raises(ValueError, match="no caption"):
        plots.caption("histogram")


def test_series_styles_are_positional_and_colour_blind_safe():
    styles = plots.series_styles(["a", "b", "c"])
    again = plots.series_styles(["x", "y", "z"])
    assert [s.color for s in styles.values()] == [s.color for s in again.values()] == list(plots.PALETTE[:3])
    many = plots.series_styles([str(k) for k in range(len(plots.PALETTE) + 1)])
    first, wrapped = many["0"], many[str(len(plots.PALETTE))]
    assert first.color == wrapped.color and first.linestyle != wrapped.linestyle


def test_plots_take_summaries_computed_alike(cohort):
    y, strong, weak = cohort
    mixed = {"a": roc_summary(y, strong, n_resamples=50), "b": roc_summary(y, weak, n_resamples=60)}
    with pytest.raises(ValueError, match="ROC bands differ"):
        plots.plot_roc(mixed)
    calibration = {"all": calibration_summary(y, _probabilities(strong)),
                   "half": calibration_summary(y[::2], _probabilities(weak[::2]))}
    with pytest.raises(ValueError, match="differ in \\(n, n_pos\\)"):
        plots.plot_calibration(calibration)
    with pytest.raises(ValueError, match="at least one model"):
        plots.plot_calibration({})


def test_eleven_models_never_share_a_colour_and_marker():
    """A DiffKD study with its from-scratch students has 11 models (2 teachers, 7 students, 2 baselines): each
    needs its own look in the forest plot and the ROC figures (7 colours alone repeated the 8th)."""
    styles = plots.series_styles([f"model{k}" for k in range(11)]).values()
    assert len({(s.color, s.marker) for s in styles}) == 11
