"""The progress-bar factory: in-place redraws on a terminal; on a file, a pipe or in a kernel, a bounded
number of finished lines (no carriage returns, no cursor moves) and never tqdm's widget warning."""

from __future__ import annotations

import io
import time
import warnings

import pytest
from tqdm.std import tqdm

from diffkd_study import progress as progress_module
from diffkd_study.progress import LOG_INTERVAL_S, LineWriter, bar_options, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_a_few_finished_lines_not_one_redraw_per_update():
    log = io.StringIO()
    for _ in progress_bar(range(5000), desc="images", file=log, miniters=1):
        pass
    text = log.getvalue()
    lines = text.splitlines()
    # a fast loop: the opening line and the final one (tqdm, miniters=1, would have redrawn 5000 times)
    assert 1 <= len(lines) <= 3
    assert "\r" not in text and "\x1b[" not in text
    assert lines[-1].startswith("images: 100%") and "5000/5000" in lines[-1]


def test_a_slow_loop_on_a_file_prints_one_line_per_interval(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.05)
    log = io.StringIO()
    for _ in progress_bar(range(40), desc="steps", file=log):
        time.sleep(0.01)  # 0.4 s in all: about 8 intervals
    lines = log.getvalue().splitlines()
    assert 3 <= len(lines) <= 15, lines
    assert all(line.startswith("steps:") for line in lines)


def test_a_terminal_gets_tqdms_in_place_bar():
    screen = _Terminal()
    for _ in progress_bar(range(3), desc="x", file=screen, mininterval=0):
        pass
    assert screen.getvalue().count("\r") >= 3  # redrawn in place
    assert bar_options(screen) == {"file": screen}


def test_a_callers_longer_interval_is_kept_off_a_terminal():
    assert bar_options(io.StringIO())["mininterval"] == LOG_INTERVAL_S
    bar = progress_bar(range(2), file=io.StringIO(), mininterval=60.0)
    assert bar.mininterval == 60.0
    bar.close()
    bar = progress_bar(range(2), file=io.StringIO(), mininterval=0.1)
    assert bar.mininterval == LOG_INTERVAL_S
    bar.close()


def test_a_bar_that_does_not_stay_and_a_disabled_bar_leave_no_blank_lines():
    log = io.StringIO()
    for _ in progress_bar(range(3), desc="epoch", file=log, leave=False):
        pass
    for _ in progress_bar(range(3), file=log, disable=True):
        pass
    assert all(line.strip() for line in log.getvalue().splitlines())


def test_line_writer_drops_redraw_control_and_empty_writes():
    out = io.StringIO()
    writer = LineWriter(out)
    for text in ("\r", "\rbar 10%   ", "\n\n\x1b[A\x1b[A", "", "\rbar 20%"):
        writer.write(text)
    assert out.getvalue() == "bar 10%\nbar 20%\n"
    assert not writer.isatty()


def _pretend_kernel(monkeypatch, *, widgets: bool) -> None:
    class Shell:
        kernel = object()

    class IPython:
        @staticmethod
        def get_ipython():
            return Shell()

    monkeypatch.setitem(progress_module.sys.modules, "IPython", IPython)
    monkeypatch.setattr(progress_module.importlib.util, "find_spec",
                        lambda name: (object() if widgets else None) if name == "ipywidgets" else None)
    monkeypatch.delenv(progress_module.PLAIN_PROGRESS_ENV, raising=False)


@pytest.mark.parametrize(("widgets", "runner", "expected"),
                         [(True, False, True), (True, True, False), (False, False, False)])
def test_the_widget_bar_only_in_a_kernel_with_ipywidgets_not_run_by_the_runner(monkeypatch, widgets, runner, expected):
    _pretend_kernel(monkeypatch, widgets=widgets)
    if runner:
        monkeypatch.setenv(progress_module.PLAIN_PROGRESS_ENV, "1")
    assert progress_module._widgets_frontend() is expected


def test_no_kernel_no_widget_bar(monkeypatch):
    monkeypatch.delitem(progress_module.sys.modules, "IPython", raising=False)
    monkeypatch.delenv(progress_module.PLAIN_PROGRESS_ENV, raising=False)
    assert progress_module._widgets_frontend() is False


def test_in_a_kernel_without_widgets_the_bar_is_plain_lines_and_silent(monkeypatch):
    _pretend_kernel(monkeypatch, widgets=False)
    log = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's "IProgress not found" TqdmWarning would fail the test
        bar = progress_bar(range(2), file=log)
        list(bar)
    assert type(bar) is tqdm and "\r" not in log.getvalue()
