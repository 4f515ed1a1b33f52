"""The built-in phantom cohort: determinism, case mix, center effects, image signal, manifest validity."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from diffkd_study.data import phantom
from diffkd_study.data.phantom import (
    CENTERS,
    DEFAULT_EXTERNAL_CENTER,
    RISK_MODEL,
    generate_phantom_cohort,
    phantom_schema,
    sample_grid,
    simulate_case,
)
from diffkd_study.data.schema import read_manifest
from diffkd_study.data.validate import validate_manifest
from diffkd_study.repro import derive_seed


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, phantom.PhantomCase]]:
    """120 cases per center at 96 px, shared by the image-signal tests."""
    return [(c, simulate_case(derive_seed(7, c, i), c, 96)) for c in CENTERS for i in range(120)]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_public_constants() -> None:
    assert set(CENTERS) >= {"center_A", "center_B", "center_C"} and DEFAULT_EXTERNAL_CENTER == "center_C"
    assert {f"intercept[{c}]" for c in CENTERS} <= set(RISK_MODEL)
    schema = phantom_schema()
    assert schema.dataset == "phantom" and schema.label_set == ("benign", "malignant")
    assert schema.positive_class == "malignant"
    assert schema.conditions["cond_birads"].levels == ("2", "3", "4a", "4b", "4c", "5")
    assert (schema.conditions["cond_age"].min, schema.conditions["cond_age"].max) == (18, 100)
    assert len({c.frequency_mhz for c in CENTERS.values()}) == len(CENTERS)


def test_cohort_is_deterministic_and_validates(tmp_path: Path) -> None:
    first = generate_phantom_cohort(tmp_path / "a", n_per_center=8, seed=3, image_size=64, progress=False)
    again = generate_phantom_cohort(tmp_path / "b", n_per_center=8, seed=3, image_size=64, progress=False)
    other = generate_phantom_cohort(tmp_path / "c", n_per_center=8, seed=4, image_size=64, progress=False)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a")["images/phA_00000.png"] != _files(tmp_path / "c")["images/phA_00000.png"]
    assert first.path == tmp_path / "a" / "phantom.csv" and first.path.is_file()
    assert first.df.equals(again.df) and not first.df.equals(other.df)

    report = validate_manifest(read_manifest(first.path), tmp_path / "a")
    assert report.errors == [], report.format()
    df = first.df
    assert len(df) == 24 and df["image_id"].is_unique and df["patient_id"].is_unique
    assert df["image_id"].iloc[0] == "phA_00000" and df["image_path"].iloc[0] == "images/phA_00000.png"
    assert set(df["dataset"]) == {"phantom"} and set(df["center"]) == set(CENTERS)
    assert df["true_risk"].between(0, 1).all()
    for mask_path in df["mask_path"]:
        mask = np.asarray(Image.open(tmp_path / "a" / mask_path))
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
    image = Image.open(tmp_path / "a" / df["image_path"].iloc[0])
    assert image.mode == "L" and image.size == (64, 64)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers


def test_missing_values_are_empty_cells_never_zero(tmp_path: Path) -> None:
    manifest = generate_phantom_cohort(tmp_path / "m", n_per_center=20, seed=0, image_size=64, progress=False)
    raw = pd.read_csv(manifest.path, dtype=str, keep_default_na=False)
    assert (raw["cond_age"] == "").sum() > 0 and (raw["cond_palpable"] == "").sum() > 0
    assert not (raw["cond_age"] == "0").any() and set(raw["cond_palpable"]) <= {"", "no", "yes"}
    assert read_manifest(manifest.path).df["cond_age"].dropna().between(18, 100).all()


def test_n_per_center_mapping_and_bad_center(tmp_path: Path) -> None:
    manifest = generate_phantom_cohort(tmp_path / "d", n_per_center={"center_B": 3}, seed=0, image_size=32,
                                       progress=False)
    assert list(manifest.df["image_id"]) == ["phB_00000", "phB_00001", "phB_00002"]
    with pytest.raises(ValueError, match="unknown center"):
        generate_phantom_cohort(tmp_path / "e", n_per_center={"center_Z": 3}, progress=False)
    with pytest.raises(ValueError, match="unknown center"):
        simulate_case(0, "center_Z")


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = phantom.simulate_case

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(phantom, "simulate_case", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom_cohort(tmp_path / "cut", n_per_center=5, image_size=32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_prevalence_and_missingness_per_center() -> None:
    n = 300
    for center, spec in CENTERS.items():
        sims = [simulate_case(derive_seed(11, center, i), center, 32) for i in range(n)]
        malignant = np.mean([c.label == "malignant" for c in sims])
        tolerance = 4 * math.sqrt(spec.prevalence * (1 - spec.prevalence) / n)
        assert abs(malignant - spec.prevalence) < tolerance, (center, malignant)
        assert abs(np.mean([c.true_risk for c in sims]) - spec.prevalence) < 0.06
        assert 0.04 < np.mean([c.conditions["cond_age"] is None for c in sims]) < 0.17
        assert 0.04 < np.mean([c.conditions["cond_palpable"] is None for c in sims]) < 0.17
        ages = [c.conditions["cond_age"] for c in sims if c.conditions["cond_age"] is not None]
        assert abs(np.mean(ages) - spec.age_mean) < 3


def test_true_risk_follows_the_documented_model() -> None:
    r = np.random.default_rng(0)
    features = phantom._sample_features(r, CENTERS["center_A"])
    worse = {**features, "margin": "spiculated", "posterior": "shadowing"}
    better = {**features, "margin": "circumscribed", "posterior": "none"}
    gap = phantom.risk_logit(worse, "center_A") - phantom.risk_logit(better, "center_A")
    assert gap == pytest.approx(RISK_MODEL["margin_spiculated"] + RISK_MODEL["posterior_shadowing"])


def _grain(image: np.ndarray) -> float:
    """Lateral autocorrelation at a 3-pixel lag of the detrended image inside the tissue, away from the
    overlay: higher for a coarser speckle grain."""
    n = image.shape[0]
    tissue = image[n // 5: n - n // 6, n // 10: n - n // 8].astype(np.float64)
    residual = tissue - ndimage.uniform_filter(tissue, 15)
    return float(np.corrcoef(residual[:, :-3].ravel(), residual[:, 3:].ravel())[0, 1])


def _with(monkeypatch: pytest.MonkeyPatch, center: str, **changes) -> None:
    monkeypatch.setitem(phantom.CENTERS, center, dataclasses.replace(CENTERS[center], **changes))


@pytest.mark.parametrize("center", ["center_A", "center_B"])
def test_lower_frequency_gives_coarser_speckle(center: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same patients, same scanner except the transducer frequency: the speckle grain follows 1 / f."""
    spec = CENTERS[center]
    seeds = [derive_seed(5, center, i) for i in range(8)]
    grain = {}
    for frequency in (spec.frequency_mhz, spec.frequency_mhz / 2):
        _with(monkeypatch, center, frequency_mhz=frequency)
        grain[frequency] = np.median([_grain(simulate_case(s, center, 128).image) for s in seeds])
    assert grain[spec.frequency_mhz / 2] > grain[spec.frequency_mhz] + 0.1, grain


def test_gain_brightens_and_dynamic_range_flattens(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = [derive_seed(6, "center_C", i) for i in range(10)]

    def images(**changes) -> np.ndarray:
        _with(monkeypatch, "center_C", **changes)
        return np.array([simulate_case(s, "center_C", 64).image for s in seeds], dtype=np.float64)

    base, brighter = images(), images(gain_db=CENTERS["center_C"].gain_db + 6)
    wide = images(dynamic_range_db=CENTERS["center_C"].dynamic_range_db + 20)
    assert brighter.mean() > base.mean() + 10
    assert wide.std() < base.std() - 5  # a wider dynamic range compresses the gray levels


def test_centers_differ_enough_to_be_told_apart(cases) -> None:
    """Scanner and overlay make a domain shift: simple image statistics identify the center."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    def stats(image: np.ndarray) -> list[float]:
        n = image.shape[0]
        corners = [image[: n // 8, : n // 3], image[: n // 8, -n // 3:], image[-n // 8:, : n // 3],
                   image[-n // 8:, -n // 3:]]
        return [image.mean(), image.std(), (image < 8).mean(), _grain(image), *(c.mean() for c in corners)]

    x = np.array([stats(c.image) for _, c in cases])
    y = np.array([center for center, _ in cases])
    assert cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5).mean() > 0.9


def _image_features(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """Hand-crafted features from pixels and mask only (no conditions, label or risk)."""
    img = image.astype(np.float64)
    inside = mask > 0
    ring = ndimage.binary_dilation(inside, iterations=4) & ~inside
    rows, cols = np.nonzero(inside)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    height, width = bottom - top + 1, right - left + 1
    below = img[bottom + 1: bottom + 1 + max(3, height // 2), left: right + 1]
    side_cols = np.r_[max(0, left - width // 2): left, right + 1: min(img.shape[1], right + 1 + width // 2)]
    beside = img[bottom + 1: bottom + 1 + max(3, height // 2)][:, side_cols]
    posterior = (below.mean() - beside.mean()) if below.size and beside.size else 0.0
    perimeter = (inside & ~ndimage.binary_erosion(inside)).sum()
    residual = img - ndimage.uniform_filter(img, 5)
    return [img[inside].mean() - img[ring].mean(), posterior, perimeter ** 2 / inside.sum(), height / width,
            img[inside].std(), residual[inside].std()]


def test_image_features_alone_predict_malignancy(cases) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.array([_image_features(c.image, c.mask) for _, c in cases])
    y = np.array([c.label == "malignant" for _, c in cases])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                               method="predict_proba")[:, 1]
    assert roc_auc_score(y, scores) > 0.7


def test_masks_nonempty_and_hypoechoic_lesions_are_dark(cases) -> None:
    assert all((c.mask > 0).sum() >= 4 for _, c in cases)
    contrasts = []
    for _, c in cases:
        if c.conditions["cond_echo_pattern"] in ("hypoechoic", "anechoic"):
            inside = c.mask > 0
            ring = ndimage.binary_dilation(inside, iterations=4) & ~inside
            contrasts.append(c.image[inside].mean() - c.image[ring].mean())
    assert len(contrasts) > 50 and np.mean(np.array(contrasts) < 0) > 0.9


def test_unrecorded_heterogeneity_is_visible_in_texture(cases) -> None:
    from scipy.stats import spearmanr

    h, texture = [], []
    for _, c in cases:
        if c.conditions["cond_echo_pattern"] == "hypoechoic" and (c.mask > 0).sum() > 100:
            inside = ndimage.binary_erosion(c.mask > 0, iterations=2)
            despeckled = ndimage.gaussian_filter(np.log(c.image.astype(np.float64) + 8), 1.0)
            h.append(c.microstructure_heterogeneity)
            texture.append(despeckled[inside].std())
    assert len(h) > 30 and spearmanr(h, texture).statistic > 0.3


def test_sample_grid(tmp_path: Path) -> None:
    manifest = generate_phantom_cohort(tmp_path / "g", n_per_center=2, seed=0, image_size=48, progress=False)
    fig = sample_grid(manifest, tmp_path / "g", per_center=2)
    assert len(fig.axes) == 2 * len(CENTERS)
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
