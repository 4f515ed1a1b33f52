"""The package's one progress-bar factory: every long loop shows its progress through :func:`progress_bar`.

Where the bar goes decides how it is drawn:

- a terminal: tqdm's ordinary bar, redrawn in place;
- anything else (a log file, a pipe, a notebook kernel, whose output is saved in the executed notebook
  and its HTML pages): one finished line every :data:`LOG_INTERVAL_S` seconds, never carriage-return
  redraws, which a file keeps as hundreds of updates;
- a kernel whose frontend shows widgets (``ipywidgets`` installed and not executed by the study runner,
  which sets :data:`PLAIN_PROGRESS_ENV`): tqdm's notebook widget. Without ``ipywidgets``, ``tqdm.auto``
  would fall back to text with a ``TqdmWarning: IProgress not found`` in every page; this never does.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.std import tqdm

LOG_INTERVAL_S = 5.0
# set by the study runner in its kernels' environment: papermill saves outputs, and a widget has none
PLAIN_PROGRESS_ENV = "DIFFKD_PLAIN_PROGRESS"
_CURSOR_UP = "\x1b[A"


class LineWriter:
    """A file for tqdm that writes each redraw as one line: the carriage returns and cursor moves of
    in-place redrawing are dropped, and so are the blank redraws that clear a bar."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        """Write ``text`` as one line without redraw controls (nothing for a blank redraw); returns ``len(text)``."""
        line = text.replace("\r", "").replace(_CURSOR_UP, "").strip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream (when it can be)."""
        getattr(self.stream, "flush", lambda: None)()

    def isatty(self) -> bool:
        """False: tqdm then draws no in-place bar."""
        return False

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: those of the stream
        return getattr(self.stream, name)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal (False without ``isatty`` or when closed)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _widgets_frontend() -> bool:
    if os.environ.get(PLAIN_PROGRESS_ENV):
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None and importlib.util.find_spec("ipywidgets") is not None


def bar_options(stream: TextIO | None = None) -> dict[str, Any]:
    """tqdm keyword arguments for a bar on ``stream`` (default ``sys.stderr``): none on a terminal; a
    :class:`LineWriter` and a :data:`LOG_INTERVAL_S` minimum interval anywhere else."""
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream):
        return {"file": stream}
    return {"file": LineWriter(stream), "mininterval": LOG_INTERVAL_S}


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (tqdm's keyword arguments: ``desc``, ``total``, ``disable``, ...), drawn
    for where it goes (see the module doc); a caller's ``mininterval`` is kept when longer than the log one."""
    if _widgets_frontend():
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(iterable, **kwargs)
    options = bar_options(kwargs.pop("file", None))
    if "mininterval" in options:
        options["mininterval"] = max(options["mininterval"], kwargs.pop("mininterval", 0.0))
    return tqdm(iterable, **options, **kwargs)


__all__ = ["LOG_INTERVAL_S", "PLAIN_PROGRESS_ENV", "LineWriter", "bar_options", "is_terminal", "progress_bar"]
