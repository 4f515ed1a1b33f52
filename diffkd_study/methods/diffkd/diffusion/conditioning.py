"""Condition encoder: manifest rows -> one conditioning vector per image (added to the UNet's time embedding).

Which conditions are used is configuration (a list of ``cond_*`` names); how each is encoded comes from
the manifest's sidecar (``ManifestSchema.conditions``):

- ``label`` (always): ``nn.Embedding(len(label_set) + 1)``; the extra row is the learned *null* label.
- categorical ``cond_*``: ``nn.Embedding(len(levels) + 2)``; row ``len(levels)`` is the learned *missing*
  level (an empty cell), row ``len(levels) + 1`` the learned *null* (dropped for classifier-free guidance).
  Missing and null are kept apart: "not recorded" is information, "dropped" is not.
- numeric ``cond_*`` (one group): each value is normalised with the train-split mean and SD; a missing
  value is replaced by a learned per-column value and flagged; ``[values, flags]`` go through a linear
  layer. A dropped group is replaced by one learned null vector.
- lesion mask (optional, when the UNet is mask-conditioned): the mask itself is an input channel; the
  encoder adds a learned "mask given" / "mask dropped" embedding, so a zero mask channel is unambiguous.

The terms are summed, passed through ``SiLU -> Linear`` and returned as a ``(N, embed_dim)`` vector. The
UNet (``diffusers.UNet2DModel`` with ``class_embed_type="identity"``) adds it to its time embedding, the
way diffusers adds a class embedding, so every ResNet block sees the conditions.

Classifier-free guidance dropout (:class:`ConditionDropout`) draws, per image, whether the label, each
categorical condition, the numeric group and the mask are replaced by their null; ``p=1`` nulls all of
them (the unconditional model used at sampling), ``p=0`` none.

The encoder's state (label set, levels, normalisation statistics, embed_dim) is plain JSON
(:meth:`ConditionEncoder.config`) and travels with the checkpoint; the learned tensors are in its
``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from diffkd_study.data.schema import Manifest


class ConditionError(ValueError):
    """A condition name or value the encoder does not know."""


@dataclass
class ConditionBatch:
    """Encoded conditions of N rows (indices and normalised values, not yet embedded)."""

    label: torch.Tensor  # (N,) long
    categorical: torch.Tensor  # (N, n_categorical) long; len(levels) = missing
    numeric: torch.Tensor  # (N, n_numeric) float, normalised; 0 where missing
    numeric_missing: torch.Tensor  # (N, n_numeric) bool
    has_mask: torch.Tensor  # (N,) bool: a mask is given for the row (mask-conditioned models)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def index(self, rows: torch.Tensor | slice | Sequence[int]) -> ConditionBatch:
        """The rows ``rows`` of every part, as a new batch."""
        return ConditionBatch(**{k: v[rows] for k, v in self.items()})

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` of each part: label, categorical, numeric, numeric_missing, has_mask."""
        return [(k, getattr(self, k)) for k in ("label", "categorical", "numeric", "numeric_missing", "has_mask")]

    def to(self, device: torch.device | str) -> ConditionBatch:
        """The batch on ``device``."""
        return ConditionBatch(**{k: v.to(device) for k, v in self.items()})


@dataclass
class ConditionDrop:
    """Which parts are nulled, per image (True = replaced by the null)."""

    label: torch.Tensor  # (N,) bool
    categorical: torch.Tensor  # (N, n_categorical) bool
    numeric: torch.Tensor  # (N,) bool
    mask: torch.Tensor  # (N,) bool

    @classmethod
    def none(cls, n: int, n_categorical: int, device: torch.device | str = "cpu") -> ConditionDrop:
        """Nothing dropped, for ``n`` images with ``n_categorical`` categorical conditions."""
        return cls.constant(n, n_categorical, False, device)

    @classmethod
    def all(cls, n: int, n_categorical: int, device: torch.device | str = "cpu") -> ConditionDrop:
        """Everything dropped (the unconditional branch of classifier-free guidance)."""
        return cls.constant(n, n_categorical, True, device)

    @classmethod
    def constant(cls, n: int, n_categorical: int, value: bool, device: torch.device | str = "cpu") -> ConditionDrop:
        """Every part of every image dropped (``value=True``) or kept (``False``)."""
        full = torch.full((n,), value, dtype=torch.bool, device=device)
        return cls(full, torch.full((n, n_categorical), value, dtype=torch.bool, device=device), full.clone(),
                   full.clone())


@dataclass(frozen=True)
class ConditionDropout:
    """Classifier-free-guidance dropout probabilities, one per modality.

    ``categorical`` is one probability applied to each categorical condition independently, or a
    mapping ``{cond_name: p}`` (conditions not named use ``default_categorical``).
    """

    label: float = 0.1
    categorical: float | Mapping[str, float] = 0.1
    numeric: float = 0.1
    mask: float = 0.1
    default_categorical: float = 0.1

    def __post_init__(self) -> None:
        probs = [self.label, self.numeric, self.mask, self.default_categorical]
        probs += list(self.categorical.values()) if isinstance(self.categorical, Mapping) else [self.categorical]
        if any(not 0.0 <= float(p) <= 1.0 for p in probs):
            raise ValueError(f"dropout probabilities must lie in [0, 1]: {self}")

    def categorical_p(self, name: str) -> float:
        """The dropout probability of categorical condition ``name``."""
        if isinstance(self.categorical, Mapping):
            return float(self.categorical.get(name, self.default_categorical))
        return float(self.categorical)

    def to_dict(self) -> dict[str, Any]:
        """The probabilities as JSON-ready data."""
        out = asdict(self)
        if isinstance(self.categorical, Mapping):
            out["categorical"] = dict(self.categorical)
        return out

    def sample(self, n: int, categorical_names: Sequence[str], generator: torch.Generator,
               device: torch.device | str = "cpu") -> ConditionDrop:
        """Draw the drop decisions for ``n`` images (always the same number of draws, for reproducibility)."""
        u = torch.rand(n, 3 + len(categorical_names), generator=generator)
        cat_p = torch.tensor([self.categorical_p(c) for c in categorical_names], dtype=torch.float32)
        return ConditionDrop(
            label=(u[:, 0] < self.label).to(device),
            numeric=(u[:, 1] < self.numeric).to(device),
            mask=(u[:, 2] < self.mask).to(device),
            categorical=(u[:, 3:] < cat_p).to(device),
        )


@dataclass
class NumericStats:
    """Mean and SD of a numeric condition on the training rows, used to normalise it."""

    mean: float
    sd: float


@dataclass
class EncoderSpec:
    """The JSON-serialisable state of a :class:`ConditionEncoder` (everything but learned tensors)."""

    label_set: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    numeric: dict[str, NumericStats] = field(default_factory=dict)
    embed_dim: int = 128
    mask: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (stored in checkpoints)."""
        return {"label_set": list(self.label_set), "categorical": {k: list(v) for k, v in self.categorical.items()},
                "numeric": {k: asdict(v) for k, v in self.numeric.items()}, "embed_dim": self.embed_dim,
                "mask": self.mask}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderSpec:
        """The spec from :meth:`to_dict` data."""
        return cls(label_set=list(data["label_set"]),
                   categorical={k: list(v) for k, v in data.get("categorical", {}).items()},
                   numeric={k: NumericStats(**v) for k, v in data.get("numeric", {}).items()},
                   embed_dim=int(data["embed_dim"]), mask=bool(data.get("mask", False)))


def encoder_spec_from_manifest(manifest: Manifest, names: Sequence[str], embed_dim: int, *, mask: bool = False,
                               split: str | None = "train") -> EncoderSpec:
    """Read the types and levels of ``names`` from the sidecar; numeric stats from the ``split`` rows.

    ``split=None`` (or a manifest without a ``split`` column) uses every row for the statistics.
    """
    declared = manifest.schema.conditions
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ConditionError(
            f"unknown condition(s) {unknown}: the manifest schema of {manifest.schema.dataset!r} declares "
            f"{sorted(declared) or '(none)'}")
    missing_columns = [n for n in names if n not in manifest.df.columns]
    if missing_columns:
        raise ConditionError(f"condition column(s) {missing_columns} are declared but absent from the manifest table")
    df = manifest.df
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
        if df.empty:
            raise ConditionError(f"no rows with split == {split!r} to compute the normalisation statistics")
    categorical: dict[str, list[str]] = {}
    numeric: dict[str, NumericStats] = {}
    for name in names:
        spec = declared[name]
        if spec.type == "categorical":
            categorical[name] = list(spec.levels or ())
        else:
            values = pd.to_numeric(df[name], errors="coerce").dropna().to_numpy(dtype=np.float64)
            mean = float(values.mean()) if values.size else 0.0
            sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
            # a constant (or single-valued) column would divide by 0: it then carries no information anyway
            numeric[name] = NumericStats(mean=mean, sd=sd if sd > 0 and math.isfinite(sd) else 1.0)
    return EncoderSpec(label_set=list(manifest.schema.label_set), categorical=categorical, numeric=numeric,
                       embed_dim=embed_dim, mask=mask)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


class ConditionEncoder(nn.Module):
    """Embeds a :class:`ConditionBatch` into ``(N, embed_dim)`` (see the module docstring)."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        dim = spec.embed_dim
        self.categorical_names = list(spec.categorical)
        self.numeric_names = list(spec.numeric)
        self.label_embedding = nn.Embedding(len(spec.label_set) + 1, dim)
        self.categorical_embeddings = nn.ModuleList(
            nn.Embedding(len(levels) + 2, dim) for levels in spec.categorical.values())
        n_num = len(self.numeric_names)
        if n_num:
            self.numeric_missing_value = nn.Parameter(torch.zeros(n_num))
            self.numeric_projection = nn.Linear(2 * n_num, dim)
            self.numeric_null = nn.Parameter(torch.zeros(dim))
        if spec.mask:
            self.mask_embedding = nn.Embedding(2, dim)  # 0: mask given, 1: mask dropped / absent
        self.output = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))

    @property
    def embed_dim(self) -> int:
        """Width of the condition embedding."""
        return self.spec.embed_dim

    def config(self) -> dict[str, Any]:
        """The encoder's spec as JSON-ready data (:meth:`from_config` rebuilds the module)."""
        return self.spec.to_dict()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConditionEncoder:
        """An encoder (freshly initialised) for a :meth:`config` record."""
        return cls(EncoderSpec.from_dict(config))

    @classmethod
    def from_manifest(cls, manifest: Manifest, names: Sequence[str], embed_dim: int, *, mask: bool = False,
                      split: str | None = "train") -> ConditionEncoder:
        """An encoder for conditions ``names`` of ``manifest``: levels from its schema, numeric statistics
        from the rows of ``split`` (see :func:`encoder_spec_from_manifest`)."""
        return cls(encoder_spec_from_manifest(manifest, names, embed_dim, mask=mask, split=split))

    # -- rows -> indices --------------------------------------------------------------------------------
    def encode_rows(self, df: pd.DataFrame, has_mask: Sequence[bool] | np.ndarray | None = None) -> ConditionBatch:
        """Indices and normalised values for the rows of ``df`` (``label`` and the used ``cond_*`` columns).

        Raises :class:`ConditionError` naming the column, value, row and known levels for an unseen
        categorical level, an unknown label or a non-numeric numeric value.
        """
        spec = self.spec
        needed = ["label", *self.categorical_names, *self.numeric_names]
        absent = [c for c in needed if c not in df.columns]
        if absent:
            raise ConditionError(f"condition table lacks column(s) {absent}; the encoder uses {needed}")
        ids = df["image_id"].tolist() if "image_id" in df.columns else [f"row {i}" for i in range(len(df))]

        def level_index(column: str, levels: list[str], allow_missing: bool) -> list[int]:
            lookup = {level: i for i, level in enumerate(levels)}
            out = []
            for row_id, value in zip(ids, df[column].tolist(), strict=True):
                if _is_missing(value):
                    if not allow_missing:
                        raise ConditionError(f"{row_id}: column {column!r} is empty; it may not be missing")
                    out.append(len(levels))
                    continue
                key = _format_level(value)
                if key not in lookup:
                    raise ConditionError(
                        f"{row_id}: column {column!r} has value {key!r}, which is not a known level; known "
                        f"levels: {levels}")
                out.append(lookup[key])
            return out

        n = len(df)
        label = torch.tensor(level_index("label", spec.label_set, allow_missing=False), dtype=torch.long)
        categorical = torch.tensor(
            [level_index(c, spec.categorical[c], allow_missing=True) for c in self.categorical_names],
            dtype=torch.long).reshape(len(self.categorical_names), n).T.contiguous()
        values = np.zeros((n, len(self.numeric_names)), dtype=np.float32)
        missing = np.zeros((n, len(self.numeric_names)), dtype=bool)
        for j, column in enumerate(self.numeric_names):
            raw = df[column].tolist()
            for i, value in enumerate(raw):
                if _is_missing(value):
                    missing[i, j] = True
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ConditionError(f"{ids[i]}: numeric column {column!r} has non-numeric value {value!r}") from None
                stats = spec.numeric[column]
                values[i, j] = (number - stats.mean) / stats.sd
        mask_flags = np.zeros(n, dtype=bool) if has_mask is None else np.asarray(has_mask, dtype=bool)
        return ConditionBatch(label=label, categorical=categorical, numeric=torch.from_numpy(values),
                              numeric_missing=torch.from_numpy(missing), has_mask=torch.from_numpy(mask_flags))

    # -- indices -> vector ------------------------------------------------------------------------------
    def forward(self, batch: ConditionBatch, drop: ConditionDrop | None = None) -> torch.Tensor:
        """The embedding (N, embed_dim) of ``batch``, with the parts chosen by ``drop`` replaced by their
        learnt nulls."""
        n = len(batch)
        device = batch.label.device
        if drop is None:
            drop = ConditionDrop.none(n, len(self.categorical_names), device)
        null_label = torch.full_like(batch.label, len(self.spec.label_set))
        out = self.label_embedding(torch.where(drop.label, null_label, batch.label))
        for j, (name, embedding) in enumerate(zip(self.categorical_names, self.categorical_embeddings, strict=True)):
            null = torch.full_like(batch.categorical[:, j], len(self.spec.categorical[name]) + 1)
            out = out + embedding(torch.where(drop.categorical[:, j], null, batch.categorical[:, j]))
        if self.numeric_names:
            filled = torch.where(batch.numeric_missing, self.numeric_missing_value.expand_as(batch.numeric),
                                 batch.numeric)
            numeric = self.numeric_projection(torch.cat([filled, batch.numeric_missing.float()], dim=1))
            out = out + torch.where(drop.numeric[:, None], self.numeric_null.expand_as(numeric), numeric)
        if self.spec.mask:
            mask_dropped = drop.mask | ~batch.has_mask
            out = out + self.mask_embedding(mask_dropped.long())
        return self.output(out)


def _format_level(value: Any) -> str:
    """Levels are strings in the sidecar; a CSV cell ``4`` read as the float 4.0 still matches ``"4"``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
