"""Reader studies: validation rules, operating points, model vs readers, ORH against Van Dyke, simulator.

Van Dyke et al. (1993) reference values (embedded; the raw ratings are vendored in
tests/data/reference/vandyke.csv, and a missing file fails the tests): OR-DBM MRMC 2.51 / RJafroc for the jackknife
covariance, MRMCaov for the DeLong covariance. Treatment 1 = spin-echo, 2 = cine; differences are
treatment 1 minus treatment 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffkd_study.metrics.operating_points import wilson_ci
from diffkd_study.reader_study import (
    LatentCorrelation,
    ReaderGroupSpec,
    ReaderStudyError,
    model_at_reader_operating_points,
    model_vs_readers,
    model_vs_readers_analysis,
    orh_analysis,
    orh_mrmc,
    read_reader_study,
    read_truth,
    reader_group_summary,
    reader_operating_points,
    simulate_ratings,
    simulate_reader_study,
    single_treatment_orh,
    validate_reads,
)

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "data" / "reference"
VANDYKE_CSV = REFERENCE_DIR / "vandyke.csv"

VANDYKE_AUC = [
    [0.91964573, 0.85877617, 0.90386473, 0.97310789, 0.82979066],
    [0.94782609, 0.90531401, 0.92173913, 0.99935588, 0.92995169],
]
VANDYKE_MEANS = [0.897037037037, 0.940837359098]
VANDYKE_MS = {"ms_t": 0.004796170532, "ms_r": 0.003836199989, "ms_tr": 0.000551030622}
VANDYKE_RRRC = {
    "jackknife": {
        "var_r": 0.001534999345,
        "var_tr": 0.000200402524,
        "cov1": 0.000346613709,
        "cov2": 0.000344074829,
        "cov3": 0.000239028371,
        "var": 0.000802288266,
        "F": 4.456318693157,
        "ddf": 15.259674589142,
        "p": 0.051665685819,
        "se": 0.020748618379,
        "t": -2.110999453614,
        "ci": (-0.087959498567, 0.000358854444),
    },
    "delong": {
        "var_r": 0.0015364254,
        "var_tr": 0.000204584,
        "cov1": 0.000342009,
        "cov2": 0.0003395265,
        "cov3": 0.0002358497,
        "var": 0.0007921325,
        "F": 4.484854,
        "ddf": 15.06611,
        "p": 0.05123303,
        "se": 0.0206825,
        "t": -2.117747,
        "ci": (-0.087867196, 0.0002665519),
    },
}
VANDYKE_SINGLE_TREATMENT = {  # jackknife, random readers and cases, each treatment alone
    "ci_low": [0.825223597542, 0.894137831211],
    "ci_high": [0.968850476532, 0.987536886985],
    "se": [0.033173596959, 0.02156636837],
    "df": [12.744647598118, 12.710189641632],
    "cov2": [0.000483961803, 0.000204187855],
    "ms_r": [0.003082628662, 0.001304601948],
}
VANDYKE_FRRC = {
    "chisq": 5.475953242477,
    "p": 0.019279843071,
    "se": 0.018717482609,
    "z": -2.340075477944,
    "ci": (-0.080485913855, -0.007114730267),
    "var": [0.000698900559, 0.001106052834, 0.000842343447, 0.00015057773, 0.00121356676],
    "cov1": [0.000373466104, 0.000760159781, 0.000355322414, 1.083399e-06, 0.000243036849],
}
VANDYKE_RRFC = {
    "F": 8.704,
    "p": 0.041958752495,
    "se": 0.014846287371,
    "ci": (-0.085020223962, -0.00258042016),
}


def approx(expected):
    """Reference values are printed to 7-12 significant digits; agreement to 1e-6 relative."""
    return pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.fixture(scope="module")
def vandyke(tmp_path_factory):
    raw = pd.read_csv(VANDYKE_CSV)
    reads = raw.rename(columns={"reader": "reader_id", "case": "case_id", "rating": "score"})
    reads["reader_group"] = "radiologist"
    reads["call"] = (reads["score"] >= 4).astype(int)
    folder = tmp_path_factory.mktemp("vandyke")
    reads.drop(columns="truth").to_csv(folder / "reads.csv", index=False)
    raw.drop_duplicates("case")[["case", "truth"]].rename(columns={"case": "case_id"}).to_csv(
        folder / "truth.csv", index=False
    )
    return read_reader_study(folder / "reads.csv", folder / "truth.csv")


@pytest.mark.parametrize("covariance", ["jackknife", "delong"])
def test_vandyke_orh_rrrc(vandyke, covariance):
    assert vandyke.fully_crossed and vandyke.treatments == ("1", "2")
    res = orh_mrmc(vandyke, covariance=covariance)
    ref = VANDYKE_RRRC[covariance]
    assert res.auc == approx(np.array(VANDYKE_AUC))
    assert res.treatment_auc == approx(np.array(VANDYKE_MEANS))
    for name, value in VANDYKE_MS.items():
        assert getattr(res, name) == approx(value)
    for name in ("var_r", "var_tr", "cov1", "cov2", "cov3", "var"):
        assert getattr(res, name) == approx(ref[name]), name
    contrast = res.rrrc.contrasts.iloc[0]
    assert (res.rrrc.statistic, res.rrrc.df1, res.rrrc.df2, res.rrrc.p_value) == approx(
        (ref["F"], 1, ref["ddf"], ref["p"])
    )
    assert (contrast["difference"], contrast["se"], contrast["statistic"]) == approx(
        (-0.043800322061, ref["se"], ref["t"])
    )
    assert (contrast["ci_low"], contrast["ci_high"]) == approx(ref["ci"])
    assert (res.n_pos, res.n_neg) == (45, 69)


def test_vandyke_single_treatment_frrc_rrfc(vandyke):
    res = orh_mrmc(vandyke, covariance="jackknife")
    for column, values in VANDYKE_SINGLE_TREATMENT.items():
        assert res.single_treatment[column].to_numpy() == approx(np.array(values)), column
    frrc = res.frrc.contrasts.iloc[0]
    assert (res.frrc.statistic, res.frrc.p_value) == approx((VANDYKE_FRRC["chisq"], VANDYKE_FRRC["p"]))
    assert (frrc["se"], frrc["statistic"], frrc["ci_low"], frrc["ci_high"]) == approx(
        (VANDYKE_FRRC["se"], VANDYKE_FRRC["z"], *VANDYKE_FRRC["ci"])
    )
    assert res.per_reader["var"].to_numpy() == approx(np.array(VANDYKE_FRRC["var"]))
    assert res.per_reader["cov1"].to_numpy() == approx(np.array(VANDYKE_FRRC["cov1"]))
    rrfc = res.rrfc.contrasts.iloc[0]
    assert (res.rrfc.statistic, res.rrfc.df2, res.rrfc.p_value) == approx(
        (VANDYKE_RRFC["F"], 4, VANDYKE_RRFC["p"])
    )
    assert (rrfc["se"], rrfc["ci_low"], rrfc["ci_high"]) == approx((VANDYKE_RRFC["se"], *VANDYKE_RRFC["ci"]))
    assert "RRRC: F(1, 15.26) = 4.4563" in res.summary()


# ---------------------------------------------------------------------------------------------
# A six-case study worked by hand
# ---------------------------------------------------------------------------------------------

TRUTH = pd.DataFrame({"case_id": ["c1", "c2", "c3", "c4", "c5", "c6"], "truth": [1, 1, 1, 0, 0, 0]})
MODEL = pd.Series([0.9, 0.3, 0.7, 0.8, 0.2, 0.1], index=TRUTH["case_id"])


def _small_reads() -> pd.DataFrame:
    r1 = {"score": [5, 4, 2, 4, 1, 2], "call": [1, 1, 0, 1, 0, 0]}  # sens 2/3, spec 2/3
    r2 = {"score": [5, 5, 4, 3, 1, 4], "call": [1, 1, 1, 0, 0, 1]}  # sens 3/3, spec 2/3
    rows = []
    for reader, group, r in (("R1", "junior", r1), ("R2", "senior", r2)):
        for case, score, call in zip(TRUTH["case_id"], r["score"], r["call"], strict=True):
            rows.append(
                {"reader_id": reader, "reader_group": group, "case_id": case, "score": score, "call": call}
            )
    return pd.DataFrame(rows)


def test_reader_operating_points_by_hand():
    study = validate_reads(_small_reads(), TRUTH)
    ops = reader_operating_points(study).set_index("reader_id")
    assert ops.loc["R1", ["tp", "fp", "n_pos", "n_neg"]].tolist() == [2, 1, 3, 3]
    assert ops.loc["R2", "sensitivity"] == 1.0 and ops.loc["R2", "fpr"] == pytest.approx(1 / 3)
    assert ops.loc["R1", "sensitivity_ci_low"] == pytest.approx(wilson_ci(2, 3).ci_low)
    assert ops.loc["R2", "fpr_ci_high"] == pytest.approx(wilson_ci(1, 3).ci_high)
    # R1 scores: positives 5, 4, 2 vs negatives 4, 1, 2 -> (3 + 2.5 + 1.5) / 9.
    assert ops.loc["R1", "auc"] == pytest.approx(7 / 9)
    assert ops.loc["R1", "treatment"] == "reading"


def test_model_at_reader_operating_points_by_hand():
    study = validate_reads(_small_reads(), TRUTH)
    table = model_at_reader_operating_points(study, MODEL).set_index(["reader_id", "metric"])
    # R1 specificity 2/3: the lowest model threshold keeping specificity >= 2/3 is 0.25 (between 0.3
    # and 0.2), where the model finds all 3 positives; the reader missed c3: b = 1, c = 0, exact p = 1.
    sens = table.loc[("R1", "sensitivity")]
    assert sens["model_threshold"] == pytest.approx(0.25) and sens["model_estimate"] == 1.0
    assert sens["reader_estimate"] == pytest.approx(2 / 3)
    assert (sens["mcnemar_b"], sens["mcnemar_c"], sens["mcnemar_p"]) == (1, 0, 1.0)
    # R1 sensitivity 2/3: the highest threshold with sensitivity >= 2/3 is 0.5; the model then
    # clears c5 and c6 but calls c4, exactly like the reader.
    spec = table.loc[("R1", "specificity")]
    assert spec["model_threshold"] == pytest.approx(0.5) and spec["model_estimate"] == pytest.approx(2 / 3)
    assert (spec["mcnemar_b"], spec["mcnemar_c"]) == (0, 0)


def test_model_scores_must_cover_the_cases():
    study = validate_reads(_small_reads(), TRUTH)
    with pytest.raises(ValueError, match="lacks 1 case"):
        model_at_reader_operating_points(study, MODEL.drop("c4"))


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def test_every_rule_reported_with_file_line_and_rule(tmp_path):
    reads = pd.DataFrame(
        [
            ["R1", "junior", "c1", "3", "1"],  # line 2: fine
            ["R1", "junior", "c2", "abc", "0"],  # line 3: score-not-numeric
            ["R1", "junior", "c3", "2", "2"],  # line 4: call-not-binary
            ["R1", "junior", "c9", "2", "0"],  # line 5: unknown-case
            ["R1", "junior", "c1", "4", "1"],  # line 6: duplicate-read (with line 2)
            ["R2", "senior", "c1", "1", "0"],  # line 7: fine
            ["R2", "junior", "c2", "1", "0"],  # line 8: reader-group-conflict
            ["", "senior", "c3", "1", "0"],  # line 9: empty-value
        ],
        columns=["reader_id", "reader_group", "case_id", "score", "call"],
    )
    path = tmp_path / "reads.csv"
    reads.to_csv(path, index=False)
    with pytest.raises(ReaderStudyError) as info:
        read_reader_study(path, TRUTH)
    found = {(p.rule, p.where) for p in info.value.problems}
    assert found == {
        ("score-not-numeric", f"{path}:3"),
        ("call-not-binary", f"{path}:4"),
        ("unknown-case", f"{path}:5"),
        ("duplicate-read", f"{path}:6"),
        ("reader-group-conflict", f"{path}:8"),
        ("empty-value", f"{path}:9"),
    }
    message = str(info.value)
    assert (
        f"{path}:6 duplicate-read: reader 'R1' read case 'c1' under 'reading' 2 times ({path}:2, {path}:6)"
        in message
    )
    assert "'c9' is not in the truth table" in message


def test_dataframe_rows_named_by_index_and_missing_columns():
    reads = _small_reads()
    reads.loc[3, "call"] = 7
    with pytest.raises(ReaderStudyError, match=r"read table row 3 call-not-binary"):
        validate_reads(reads, TRUTH)
    with pytest.raises(ReaderStudyError, match=r"missing column\(s\) \['call'\]"):
        validate_reads(_small_reads().drop(columns="call"), TRUTH)


def test_truth_column_in_reads_must_agree():
    reads = _small_reads().merge(TRUTH, on="case_id")
    assert validate_reads(reads, TRUTH).reads["truth"].tolist() == reads["truth"].tolist()
    reads.loc[2, "truth"] = 0
    with pytest.raises(ReaderStudyError, match=r"read table row 2 truth-conflict: truth 0 here but 1"):
        validate_reads(reads, TRUTH)


def test_truth_table_rules():
    bad = pd.DataFrame({"case_id": ["c1", "c2", "c2", "c3"], "truth": [1, 0, 1, "yes"]})
    with pytest.raises(ReaderStudyError) as info:
        read_truth(bad)
    assert info.value.rules_broken == {"truth-duplicate-case", "truth-not-binary"}
    assert read_truth({1: 1, 2: 0}).to_dict() == {"1": 1, "2": 0}  # IDs compared as text


def test_missing_reads_reported_and_refused_by_mrmc():
    reads = _small_reads()
    reads = reads[~((reads["reader_id"] == "R2") & reads["case_id"].isin(["c2", "c5"]))]
    study = validate_reads(reads, TRUTH)
    assert not study.fully_crossed
    missing = study.completeness()
    assert missing[["case_id", "n_readers", "missing_readers"]].values.tolist() == [
        ["c2", 1, "R2"],
        ["c5", 1, "R2"],
    ]
    assert "2 read(s) missing" in study.summary()
    with pytest.raises(ValueError, match="fully crossed design; 2 read"):
        model_vs_readers(study, MODEL)
    assert len(reader_operating_points(study)) == 2  # per-reader metrics use the cases each one read


def test_modality_column_is_the_reading_condition():
    reads = pd.concat([_small_reads().assign(modality="DBT"), _small_reads().assign(modality="FFDM")])
    study = validate_reads(reads.reset_index(drop=True), TRUTH)
    assert study.treatments == ("DBT", "FFDM") and study.condition_source == "modality"
    with pytest.raises(ValueError, match="choose one with treatment="):
        model_vs_readers(study, MODEL)


# ---------------------------------------------------------------------------------------------
# Model vs readers and group summaries
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated():
    truth = pd.DataFrame(
        {"case_id": [f"p{i:03d}" for i in range(160)], "truth": np.r_[np.ones(60, int), np.zeros(100, int)]}
    )
    reads = simulate_reader_study(truth, seed=4)
    rng = np.random.default_rng(9)
    model = pd.Series(2.2 * truth["truth"].to_numpy() + rng.standard_normal(160), index=truth["case_id"])
    return validate_reads(reads, truth), model


@pytest.mark.parametrize("covariance", ["jackknife", "delong"])
def test_model_vs_readers_equals_orh_with_the_model_as_a_treatment_read_identically(simulated, covariance):
    study, model = simulated
    res = model_vs_readers(study, model, covariance=covariance, margin=0.05)
    scores, truth, _, readers, cases = study.score_array()
    model_row = model[list(cases)].to_numpy()
    two_treatments = np.stack([np.broadcast_to(model_row, scores[0].shape), scores[0]])
    orh = orh_analysis(two_treatments, truth, covariance, treatments=["model", "readers"], readers=readers)
    contrast = orh.rrrc.contrasts.iloc[0]
    assert res.difference == pytest.approx(contrast["difference"], abs=1e-12)
    assert (res.se, res.df, res.p_value) == pytest.approx(
        (contrast["se"], contrast["df"], contrast["p_value"]), rel=1e-9
    )
    assert (res.ci_low, res.ci_high) == pytest.approx((contrast["ci_low"], contrast["ci_high"]), rel=1e-9)
    assert res.model_auc - res.mean_reader_auc == pytest.approx(res.difference)
    # RRFC: the readers-random, cases-fixed analysis is a one-sample t test of the differences.
    diffs = res.model_auc - res.reader_auc
    assert res.rrfc_se == pytest.approx(diffs.std(ddof=1) / np.sqrt(diffs.size))
    # Non-inferiority at margin 0 is half the two-sided p when the model is ahead.
    zero = model_vs_readers(study, model, covariance=covariance, margin=0.0)
    assert zero.difference > 0
    assert zero.p_noninferiority == pytest.approx(zero.p_value / 2, rel=1e-9)


def test_model_vs_one_reader_group(simulated):
    study, model = simulated
    junior = model_vs_readers(study, model, reader_group="junior")
    assert len(junior.readers) == 4 and all(r.startswith("sim-junior") for r in junior.readers)
    with pytest.raises(ValueError, match="no readers in group"):
        model_vs_readers(study, model, reader_group="fellow")
    with pytest.raises(ValueError, match="at least 2 readers"):
        model_vs_readers_analysis(np.zeros((1, 4)), np.zeros(4), np.array([1, 1, 0, 0]))


def test_reader_group_summary(simulated):
    study, _ = simulated
    summary = reader_group_summary(study).set_index("reader_group")
    assert list(summary.index) == ["junior", "senior", "all"]
    assert summary.loc["all", "n_readers"] == 8
    scores, truth, *_ = study.score_array(readers=[r for r in study.readers if r.startswith("sim-senior")])
    st = single_treatment_orh(scores[0], truth)
    assert (summary.loc["senior", "auc_ci_low"], summary.loc["senior", "auc_ci_high"]) == pytest.approx(
        (st.ci_low, st.ci_high)
    )
    assert summary.loc["senior", "mean_auc"] == pytest.approx(st.mean_auc)


def test_reader_auc_table_gives_wald_intervals_from_the_orh_covariance():
    rng = np.random.default_rng(3)
    truth = np.repeat([1, 0], 20)
    scores = truth[None, None, :] * 0.8 + rng.normal(size=(2, 3, 40))  # 2 treatments x 3 readers
    res = orh_analysis(scores, truth, covariance="delong", treatments=["a", "b"], readers=["r1", "r2", "r3"])
    table = res.reader_auc_table(0.95)
    assert list(table.columns) == ["treatment", "reader_id", "auc", "ci_low", "ci_high"]
    assert len(table) == res.auc.size and list(table["reader_id"][: len(res.readers)]) == list(res.readers)
    first_se = float(np.sqrt(res.auc_covariance[0, 0]))
    assert table.loc[0, "ci_high"] == pytest.approx(min(1.0, res.auc[0, 0] + 1.959964 * first_se), abs=1e-6)
    assert ((table["ci_low"] <= table["auc"]) & (table["auc"] <= table["ci_high"])).all()
    assert table[["ci_low", "ci_high"]].stack().between(0, 1).all()
    assert (res.reader_auc_table(0.5)["ci_high"] <= table["ci_high"]).all()


# ---------------------------------------------------------------------------------------------
# Simulator
# ---------------------------------------------------------------------------------------------


def test_simulator_is_labelled_seeded_and_valid():
    truth = pd.Series([1, 0] * 20, index=[f"k{i}" for i in range(40)])
    a = simulate_reader_study(truth, seed=3)
    assert a.equals(simulate_reader_study(truth, seed=3))
    assert not a.equals(simulate_reader_study(truth, seed=4))
    assert (a["simulated"] == 1).all() and a["simulation"].str.contains("seed=3").all()
    assert set(a["reader_group"]) == {"junior", "senior"} and a["reader_id"].str.startswith("sim-").all()
    assert set(a["score"]) <= {1, 2, 3, 4, 5} and (a["call"] == (a["score"] >= 4)).all()
    study = validate_reads(a, truth)
    assert study.fully_crossed and len(study.readers) == 8


def test_simulated_readers_are_plausible_and_correlated():
    n = 4000
    truth = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    groups = [ReaderGroupSpec("junior", 3, 1.4, threshold_shift=-0.15), ReaderGroupSpec("senior", 3, 2.0)]
    ratings = simulate_ratings(truth, groups, rng=np.random.default_rng(0))[0]
    calls = ratings >= 4
    sens, spec = calls[:, truth == 1].mean(axis=1), (~calls[:, truth == 0]).mean(axis=1)
    assert np.all((sens > 0.5) & (sens < 0.95)) and np.all((spec > 0.7) & (spec < 0.95))
    assert sens[3:].mean() > sens[:3].mean()  # seniors find more cancers
    # Shared case difficulty: two readers' ratings of the same non-diseased cases correlate
    # (latent correlation s_C + s_TC = 0.4 by default).
    corr = np.corrcoef(ratings[:, truth == 0])[np.triu_indices(6, 1)]
    assert np.all((corr > 0.2) & (corr < 0.5))
    independent = simulate_ratings(
        truth, groups, correlation=LatentCorrelation(0, 0, 0), rng=np.random.default_rng(0)
    )[0]
    assert np.abs(np.corrcoef(independent[:, truth == 0])[np.triu_indices(6, 1)]).max() < 0.1


def test_case_difficulty_is_shared_with_the_readers():
    truth = np.zeros(3000, int)
    difficulty = np.random.default_rng(1).standard_normal(3000)
    ratings = simulate_ratings(truth, case_difficulty=difficulty, rng=np.random.default_rng(2))
    assert np.corrcoef(ratings[0].mean(axis=0), difficulty)[0, 1] > 0.4


@pytest.mark.slow
def test_orh_type_one_error_near_five_percent():
    """Null: two treatments with identical reader skill; random readers and cases each time."""
    truth = np.r_[np.ones(50, int), np.zeros(50, int)]
    groups = [ReaderGroupSpec("readers", 5, separation=1.5)]
    rng = np.random.default_rng(123)
    reps = 2000
    rejections = {"jackknife": 0, "delong": 0}
    for _ in range(reps):
        ratings = simulate_ratings(truth, groups, n_treatments=2, rng=rng)
        for covariance in rejections:
            rejections[covariance] += orh_analysis(ratings, truth, covariance).rrrc.p_value < 0.05
    rates = {k: v / reps for k, v in rejections.items()}
    assert all(0.03 <= r <= 0.07 for r in rates.values()), rates


def _comparison(difference, ci_low, ci_high, p_value):
    from diffkd_study.reader_study import ModelVsReaders

    return ModelVsReaders(
        model_auc=0.71, reader_auc=np.array([0.88, 0.90]), readers=("r1", "r2"), mean_reader_auc=0.89,
        difference=difference, se=0.05, df=10.0, statistic=difference / 0.05, p_value=p_value, ci_low=ci_low,
        ci_high=ci_high, ms_r=0.0, var=0.0, cov2=0.0, rrfc_se=0.0, rrfc_p_value=0.0, rrfc_ci_low=0.0,
        rrfc_ci_high=0.0, n_pos=6, n_neg=18, covariance="jackknife", level=0.95)


def test_model_vs_readers_in_words_for_clinicians():
    lower = _comparison(-0.18, -0.31, -0.05, 0.0004)
    assert lower.describe("simulated readers") == (
        "The model's AUC (0.71) was 0.18 lower than the simulated readers' average AUC (0.89); 95% confidence "
        "interval of the difference: 0.05 lower to 0.31 lower (p < 0.001, 2 simulated readers, 24 cases). The "
        "interval does not include zero: on these cases the model was worse than the average reader.")
    unclear = _comparison(0.156, -0.092, 0.404, 0.2057)
    assert unclear.describe() == (
        "The model's AUC (0.71) was 0.16 higher than the readers' average AUC (0.89); 95% confidence interval of "
        "the difference: 0.09 lower to 0.40 higher (p = 0.206, 2 readers, 24 cases). The interval includes zero "
        "(no difference): these cases cannot tell the model and the readers apart.")
    # the reviewer's line keeps the statistic and the method, and never prints p = 0
    assert str(lower) == ("model AUC 0.710 vs mean of 2 readers 0.890: difference -0.180 (95% CI -0.310 to -0.050), "
                          "t(10.0) = -3.60, p = 0.0004 [1T-RRRC, jackknife]")
    assert "p < 0.0001" in str(_comparison(-0.18, -0.31, -0.05, 1e-7))


def test_reader_study_described_without_file_names(simulated):
    study, _ = simulated
    text = study.describe("simulated readers", "malignant lesions")
    assert text.startswith("8 simulated readers (4 junior, 4 senior) read 160 cases (")
    assert text.endswith(" with malignant lesions).") and "/" not in text and ".csv" not in text
