"""The pooled cross-validation analysis on hand-made fold predictions: out-of-fold coverage, seed averaging, pooled
and per-fold AUCs, the external fold average and the Holm-adjusted planned comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffkd_study.data.folds import FOLD_COLUMN
from diffkd_study.data.schema import Manifest, ManifestSchema
from diffkd_study.methods.diffkd import cv
from diffkd_study.metrics.clustered import holm_adjust
from diffkd_study.metrics.roc import auc_delong, delong_test, roc_auc

SCHEMA = ManifestSchema(dataset="t", label_set=("benign", "malignant"), task="binary", positive_class="malignant")
FOLDS = 2
MODELS = ("teacher_real", "teacher_real+syn", "student_alone", "student_kd_real", "student_diffkd")


def _study(n_internal: int = 24, n_external: int = 8) -> Manifest:
    rows = []
    for p in range(n_internal + n_external):
        external = p >= n_internal
        for i in range(2):  # two images per patient
            rows.append({"image_id": f"p{p}-{i}", "patient_id": f"p{p}", "center": "C" if external else "A",
                         "label": "malignant" if p % 3 == 0 else "benign", "split": "external" if external else "test",
                         FOLD_COLUMN: np.nan if external else p % FOLDS + 1})
    return Manifest(pd.DataFrame(rows), SCHEMA)


def _predictions(study: Manifest, seeds=(0, 1), seed: int = 0) -> pd.DataFrame:
    gen = np.random.default_rng(seed)
    df = study.df
    y = (df["label"] == "malignant").astype(int).to_numpy()
    rows = []
    for fold in range(1, FOLDS + 1):
        test = (df["split"] == "test") & (df[FOLD_COLUMN] == fold)
        shown = df.loc[test | (df["split"] == "external")]
        for m, model in enumerate(MODELS):
            for s in seeds:
                score = np.clip(0.3 * y[shown.index] + 0.1 * m + gen.normal(0, 0.3, len(shown)), 0, 1)
                rows.append(pd.DataFrame({"image_id": shown["image_id"], "patient_id": shown["patient_id"],
                                          "dataset": "t", "center": shown["center"], "split": shown["split"],
                                          "y_true": y[shown.index], "y_score": score, "model": model, "seed": s,
                                          "fold": fold}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture
def data():
    study = _study()
    pred = _predictions(study)
    return study, pred, cv.seed_mean(pred)


def test_out_of_fold_has_each_internal_image_once_per_model(data):
    study, pred, rows = data
    oof = cv.out_of_fold(rows, study)
    internal = study.df.loc[study.df["split"] != "external", "image_id"]
    for _, part in oof.groupby("model"):
        assert sorted(part["image_id"]) == sorted(internal)
    assert len(cv.out_of_fold(pred, study)) == 2 * len(oof)  # per seed too


def test_out_of_fold_refuses_a_duplicate_a_gap_or_a_wrong_fold(data):
    study, _, rows = data
    test = rows[rows["split"] == "test"]
    with pytest.raises(AssertionError, match="more than once"):
        cv.out_of_fold(pd.concat([rows, test.iloc[[0]]]), study)
    with pytest.raises(AssertionError, match="no out-of-fold prediction"):
        cv.out_of_fold(rows.drop(test.index[0]), study)
    wrong = rows.copy()
    wrong.loc[test.index[0], "fold"] = 3 - wrong.loc[test.index[0], "fold"]
    with pytest.raises(AssertionError, match="does not hold the image"):
        cv.out_of_fold(wrong, study)


def test_external_per_fold_needs_every_fold(data):
    _, _, rows = data
    ext = cv.external_per_fold(rows, FOLDS)
    assert (ext.groupby(["model", "image_id"]).size() == FOLDS).all()
    with pytest.raises(AssertionError, match="exactly once by each"):
        cv.external_per_fold(rows.drop(rows.index[rows["split"] == "external"][:1]), FOLDS)


def test_seed_mean_averages_the_seeds(data):
    _, pred, rows = data
    key = (1, "student_alone", "p0-0")
    expected = pred.set_index(["fold", "model", "image_id"]).loc[key, "y_score"].mean()
    got = rows.set_index(["fold", "model", "image_id"]).loc[key]
    assert got["y_score"] == pytest.approx(expected) and got["n_seeds"] == 2


def test_pooled_and_per_fold_auc(data):
    study, _, rows = data
    oof = cv.out_of_fold(rows, study)
    table = cv.auc_tables(oof).set_index("model")
    part = oof[oof["model"] == "student_diffkd"]
    ref = auc_delong(part["y_true"], part["y_score"], groups=part["patient_id"])
    got = table.loc["student_diffkd"]
    assert got["auc"] == pytest.approx(ref.auc) and (got["ci_low"], got["ci_high"]) == pytest.approx((ref.ci_low, ref.ci_high))
    assert got["n_patients"] == 24 and got["n_images"] == 48
    per_fold = [roc_auc(f["y_true"], f["y_score"]) for _, f in part.groupby("fold")]
    assert got["fold_auc_mean"] == pytest.approx(np.mean(per_fold))
    assert got["fold_auc_sd"] == pytest.approx(np.std(per_fold, ddof=1)) and got["folds_estimable"] == 2


def test_a_fold_with_one_class_is_not_estimable_there(data):
    study, _, rows = data
    oof = cv.out_of_fold(rows, study)
    oof.loc[oof["fold"] == 1, "y_true"] = 0  # fold 1 loses its positives
    row = cv.auc_tables(oof, ["teacher_real"]).iloc[0]
    assert row["folds_estimable"] == 1 and np.isnan(row["fold_auc_sd"]) and row["fold_aucs"].startswith("–")


def test_external_auc_of_the_fold_averaged_score(data):
    _, _, rows = data
    ext = cv.external_per_fold(rows, FOLDS)
    table = cv.external_table(ext).set_index("model")
    part = ext[ext["model"] == "teacher_real"]
    avg = part.groupby("image_id").agg(y=("y_true", "first"), s=("y_score", "mean"), g=("patient_id", "first"))
    ref = auc_delong(avg["y"], avg["s"], groups=avg["g"])
    assert table.loc["teacher_real", "auc"] == pytest.approx(ref.auc)
    assert table.loc["teacher_real", "ci_high"] == pytest.approx(ref.ci_high)
    assert table.loc["teacher_real", "test_set"] == "external: C" and table.loc["teacher_real", "n_patients"] == 8


def test_planned_comparisons_are_clustered_and_holm_adjusted(data):
    study, _, rows = data
    oof = cv.out_of_fold(rows, study)
    table = cv.planned_comparisons(oof)
    p = []
    for a, b in cv.PLANNED_PAIRS:
        wa = oof[oof["model"] == a].set_index("image_id").sort_index()
        wb = oof[oof["model"] == b].set_index("image_id").loc[wa.index]
        ref = delong_test(wa["y_true"], wa["y_score"], wb["y_score"], groups=wa["patient_id"])
        row = table[table["comparison"] == f"{a} vs {b}"].iloc[0]
        assert row["difference"] == pytest.approx(ref.difference) and row["p_value"] == pytest.approx(ref.p_value)
        assert row["mdd"] == pytest.approx(ref.minimal_detectable_difference) and row["n_patients"] == 24
        p.append(ref.p_value)
    assert table["p_holm"].to_numpy() == pytest.approx(holm_adjust(p))


def test_a_missing_model_is_not_estimable_and_left_out_of_holm(data):
    study, _, rows = data
    oof = cv.out_of_fold(rows[rows["model"] != "teacher_real+syn"], study)
    table = cv.planned_comparisons(oof)
    first = table.iloc[0]
    assert first["note"].startswith("not estimable: no predictions of teacher_real+syn")
    assert np.isnan(first["p_holm"]) and first["significant"] == "not estimable"
    assert table["p_holm"].iloc[1:].to_numpy() == pytest.approx(holm_adjust(table["p_value"].iloc[1:].to_numpy()))


def test_seed_table(data):
    study, pred, _ = data
    table = cv.seed_table(cv.out_of_fold(pred, study)).set_index("model")
    assert table.loc["teacher_real", "n_seeds"] == 2 and np.isfinite(table.loc["teacher_real", "seed_auc_sd"])


def test_pooled_tests_carry_the_out_of_fold_and_fold_averaged_scores(data):
    study, _, rows = data
    oof, ext = cv.out_of_fold(rows, study), cv.external_per_fold(rows, FOLDS)
    pooled = cv.pooled_tests(oof, ext)
    internal = pooled[pooled["test_set"] == cv.POOLED_INTERNAL]
    assert len(internal) == len(oof)
    external = pooled[(pooled["test_set"] == "external: C") & (pooled["model"] == "teacher_real")].set_index("image_id")
    expected = ext[ext["model"] == "teacher_real"].groupby("image_id")["y_score"].mean()
    assert external["y_score"].sort_index().to_numpy() == pytest.approx(expected.sort_index().to_numpy())
    table = cv.external_table(ext).set_index("model")
    assert roc_auc(external["y_true"], external["y_score"]) == pytest.approx(table.loc["teacher_real", "auc"])


def test_synthetic_summaries_read_every_fold_and_name_the_missing_one(tmp_path):
    import json

    folder = tmp_path / "fold-1" / "synthetic"
    folder.mkdir(parents=True)
    (folder / "quality.json").write_text(json.dumps({
        "fidelity_vs_floor": [{"extractor": "x", "FID": 4.0, "FID floor": 2.0}],
        "two_sample": [{"scope": "all", "auc": 0.6}], "goals": []}))
    fidelity, two_sample, missing = cv.synthetic_summaries(tmp_path, 2)
    assert fidelity.to_dict("records") == [{"fold": 1, "extractor": "x", "FID": 4.0, "FID floor": 2.0}]
    assert two_sample["auc"].tolist() == [0.6] and len(missing) == 1 and missing[0].startswith("fold 2:")


def test_fold_stratified_pairs_are_immune_to_a_fold_models_scale(data):
    from diffkd_study.methods.diffkd.comparisons import paired_scores, paired_test_row

    study, _, rows = data
    oof = cv.out_of_fold(rows, study)
    pair = [("student_diffkd", "student_alone")]
    before = cv.fold_stratified_pairs(oof, pair).iloc[0]
    fold1 = paired_test_row(paired_scores(oof[oof["fold"] == 1], None, *pair[0]))
    fold2 = paired_test_row(paired_scores(oof[oof["fold"] == 2], None, *pair[0]))
    w1, w2 = 1 / fold1["se"] ** 2, 1 / fold2["se"] ** 2
    assert before["difference"] == pytest.approx((w1 * fold1["difference"] + w2 * fold2["difference"]) / (w1 + w2))
    assert before["se"] == pytest.approx((w1 + w2) ** -0.5)
    # fold 2's student_diffkd model scores on another scale: the pooled test moves, the stratified one does not
    shifted = oof.copy()
    moved = (shifted["fold"] == 2) & (shifted["model"] == "student_diffkd")
    shifted.loc[moved, "y_score"] += 10
    after = cv.fold_stratified_pairs(shifted, pair).iloc[0]
    assert after["difference"] == pytest.approx(before["difference"])
    pooled_before = cv.planned_comparisons(oof, pair).iloc[0]["difference"]
    pooled_after = cv.planned_comparisons(shifted, pair).iloc[0]["difference"]
    assert abs(pooled_after - pooled_before) > 0.05


def test_stratified_goals_apply_each_goals_margin(data):
    study, _, rows = data
    oof = cv.out_of_fold(rows, study)
    goals = cv.stratified_goals(oof)
    teacher = goals[(goals["model_a"] == "teacher_real") & (goals["model_b"] == "student_kd_real")].iloc[0]
    assert teacher["margin"] == 0.03 and teacher["met"] == (teacher["difference"] <= 0.03)
    assert teacher["with_confidence"] == (teacher["ci_high"] <= 0.03)
    kd = goals[goals["goal"].str.startswith("distillation")].iloc[0]
    assert kd["met"] == (kd["difference"] >= 0.02)


def test_the_auc_tables_a_reader_sees_say_what_each_model_is_and_drop_the_repeated_method():
    from diffkd_study.methods.diffkd.evaluate import model_descriptions
    from diffkd_study.nbutil import table_frame

    table = pd.DataFrame({"model": ["teacher_real", "student_kd_real-jittered"], "auc": [0.7, 0.6],
                          "note": ["Obuchowski clustered (logit scale)"] * 2, "fold_auc_sd": [0.01, 0.02]})
    shown = cv.for_reading(table)
    assert list(shown.columns) == ["model", "description", "auc", "fold_auc_sd"]  # the method is named above
    words = model_descriptions(["teacher_real", "student_kd_real-jittered"])
    assert shown["description"].tolist() == [words["teacher_real"], words["student_kd_real-jittered"]]
    assert shown["description"].iloc[1] != "student_kd_real-jittered"  # words, not the code name again
    mixed = table.assign(note=["Obuchowski clustered (logit scale)", "not estimable: one class only"])
    assert cv.for_reading(mixed)["note"].tolist() == ["", "not estimable: one class only"]
    headers = list(table_frame(shown, human=True).columns)
    assert headers == ["Model", "What it is", "AUC", "SD of the folds' AUCs"] and not any("_" in h for h in headers)
