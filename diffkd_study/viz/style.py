"""House style of every figure: the colour-blind-safe palette, line styles and markers, the shared
drawing helpers, and ``save_figure``.

``STYLE`` uses the Okabe-Ito palette (``PALETTE``); each series also gets its own line style and
marker (``series_styles``), so the figures stay readable in grey-scale print. Series take colours in
the order they are given: pass the models in the same order to every function and a model keeps its
colour across figures. Reader groups take a marker each (sorted by group name) in both the ROC and
the reader-study figure. ``save_figure`` writes PNG (120 dpi) and SVG.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from diffkd_study.io import atomic_path
from diffkd_study.viz.captions import CAPTIONS

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies. Yellow (#F0E442) is left out: it vanishes on a white background.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
)
LINESTYLES: tuple[Any, ...] = ("-", "--", "-.", (0, (1, 1.2)), (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
# 11 markers against 7 colours: series k gets (colour k mod 7, marker k mod 11), a pair no other of the first 77
# series has, so the 11 models of a DiffKD study with its from-scratch students never share a look.
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
REFERENCE_COLOR = "0.45"  # chance diagonal, ideal calibration, treat all
READER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P")
READER_FACES: tuple[str, ...] = ("0.15", "white", "0.65", "white", "0.15", "0.65")

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8.5,
    "legend.title_fontsize": 9,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.prop_cycle": cycler(color=PALETTE),
    "lines.linewidth": 1.8,
    "errorbar.capsize": 0,
    "figure.dpi": 100,
}

PNG_DPI = 120


F = TypeVar("F", bound=Callable[..., Figure])


def _figure_function(kind: str) -> Callable[[F], F]:
    """Draw inside the house style and append the clinician caption template to the docstring."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Figure:
            with plt.rc_context(STYLE):
                return func(*args, **kwargs)

        wrapper.__doc__ = (
            f"{(func.__doc__ or '').rstrip()}\n\n"
            f"    Caption template for clinicians (``CAPTIONS[{kind!r}]``, filled by ``caption({kind!r}, ...)``):\n\n"
            f"    {CAPTIONS[kind]}\n"
        )
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn: colour, line style and marker."""

    color: str
    linestyle: Any
    marker: str


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """Colour, line style and marker per series, by position (the k-th series always looks the same)."""
    return {
        name: SeriesStyle(
            PALETTE[k % len(PALETTE)],
            LINESTYLES[(k + k // len(PALETTE)) % len(LINESTYLES)],
            MARKERS[k % len(MARKERS)],
        )
        for k, name in enumerate(names)
    }


def _reader_group_styles(groups: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(marker, face colour) per reader group, by sorted group name, shared by the ROC and reader plots."""
    return {
        g: (READER_MARKERS[k % len(READER_MARKERS)], READER_FACES[k % len(READER_FACES)])
        for k, g in enumerate(sorted(groups))
    }


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = plt.figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {missing}; it has {list(df.columns)}")


def _error_arms(value: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray | None:
    """Asymmetric error-bar lengths, or None when the interval columns are absent or empty."""
    if low.isna().all() or high.isna().all():
        return None
    return np.vstack([(value - low).clip(lower=0), (high - value).clip(lower=0)]).astype(float)


NOT_APPLICABLE = "not applicable"


def draw_not_applicable(ax: Axes, title: str | None = None, reason: str = "") -> Axes:
    """Mark a panel of a grid (e.g. one model on one test set) as not applicable: no data, a short reason."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, NOT_APPLICABLE + (f"\n({reason})" if reason else ""), ha="center", va="center",
            color="0.35", wrap=True, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig: Figure, figures_dir: str | os.PathLike[str], name: str) -> Path:
    """Save ``<figures_dir>/<name>.png`` (120 dpi) and ``.svg``; return the PNG path.

    Both files are written under temporary names and renamed when complete, so an interrupted save
    leaves no half-written figure. The SVG carries no date and its element IDs are salted with
    ``name`` rather than drawn at random, so a re-executed notebook writes the same SVG bytes.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"name must be a plain file name without folders; got {name!r}")
    if Path(name).suffix.lower() in (".png", ".svg"):
        raise ValueError(f"give the name without extension (both .png and .svg are written); got {name!r}")
    folder = Path(figures_dir)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    # Unique temporary names (two runs saving the same figure never share one), renamed when both are complete.
    with atomic_path(png) as tmp_png, atomic_path(svg) as tmp_svg, plt.rc_context({"svg.hashsalt": name}):
        fig.savefig(tmp_png, format="png", dpi=PNG_DPI, bbox_inches="tight")
        fig.savefig(tmp_svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return png
