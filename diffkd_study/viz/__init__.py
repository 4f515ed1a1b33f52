"""Evaluation figures in one house style; each draws precomputed results and has a clinician caption.

Submodules:

* ``style``: the colour-blind-safe palette, line styles and markers (``STYLE``, ``series_styles``),
  shared drawing helpers, ``draw_not_applicable`` and ``save_figure`` (PNG at 120 dpi and SVG);
* ``captions``: one plain-language caption template per figure (``CAPTIONS``, ``caption``,
  ``fill_caption``) and the shared legend texts (``auc_label``);
* ``roc``: ROC curves with bands and reader points (``plot_roc``), AUC forest plot (``plot_auc_forest``);
* ``calibration``: reliability diagram (``plot_calibration``) and decision curves (``plot_decision_curves``);
* ``confusion``: confusion matrix (``plot_confusion``);
* ``training``: training-loss curves (``plot_loss_curves``);
* ``reader``: the reader study (``plot_reader_study``).

Every ``plot_*`` function returns a matplotlib ``Figure`` and never calls ``plt.show``. Figures are
created through pyplot, as in ``diffkd_study.data.audit``, so a notebook cell that draws one shows it
once through the inline backend; close them (``plt.close(fig)``) inside loops.

Plotting draws numbers computed beforehand by ``diffkd_study.metrics``: ``plot_roc`` takes
``roc.roc_summary`` results (DeLong AUC intervals, pointwise bootstrap ROC bands), ``plot_calibration``
takes ``calibration.calibration_summary`` results; reader points carry Wilson intervals and reader
means ORH intervals from ``diffkd_study.reader_study``.
"""

from diffkd_study.viz.calibration import plot_calibration, plot_decision_curves
from diffkd_study.viz.captions import CAPTIONS, auc_label, caption, fill_caption
from diffkd_study.viz.confusion import Normalize, plot_confusion
from diffkd_study.viz.reader import ALL_READERS, plot_reader_study
from diffkd_study.viz.roc import plot_auc_forest, plot_roc
from diffkd_study.viz.style import (
    LINESTYLES,
    MARKERS,
    NOT_APPLICABLE,
    PALETTE,
    PNG_DPI,
    READER_FACES,
    READER_MARKERS,
    REFERENCE_COLOR,
    STYLE,
    SeriesStyle,
    draw_not_applicable,
    save_figure,
    series_styles,
)
from diffkd_study.viz.training import plot_loss_curves

__all__ = [
    "ALL_READERS",
    "CAPTIONS",
    "LINESTYLES",
    "MARKERS",
    "NOT_APPLICABLE",
    "PALETTE",
    "PNG_DPI",
    "READER_FACES",
    "READER_MARKERS",
    "REFERENCE_COLOR",
    "STYLE",
    "Normalize",
    "SeriesStyle",
    "auc_label",
    "caption",
    "draw_not_applicable",
    "fill_caption",
    "plot_auc_forest",
    "plot_calibration",
    "plot_confusion",
    "plot_decision_curves",
    "plot_loss_curves",
    "plot_reader_study",
    "plot_roc",
    "save_figure",
    "series_styles",
]
