"""Real-browser test: every page of a run's report renders in headless Chromium with no broken image, no
broken link and no JavaScript error; every stage page (reviewer and clinician) shows, drawn at a real size,
at least the figures its metrics JSON lists; screenshots of the index, the summary and the evaluation pages
are saved.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them with apt when missing) and
the ``selenium`` client (dev extra). Skipped, with the reason, only where Chromium is not installed.
The report is served over HTTP on localhost, so a link to a missing file is a 404, not a silent miss.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from diffkd_study.summary import SIMULATED_BANNER
from tests.studyrun import run_study

pytestmark = [pytest.mark.notebook, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# --headless=new as root in a container: no sandbox; no background traffic (this machine has no network)
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1280,2000")
# a figure drawn by the notebook, not an icon of nbconvert's template (those are a few dozen px)
MIN_FIGURE_PX = 100
SCREENSHOTS = ("index.html", "90_summary.clinician.html", "50_evaluation.clinician.html")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    raw = {"name": "browser", "seed": 0,
           "stages": ["data_audit", "baselines", "evaluation", "reader_study", "summary"],
           "data": {"phantom": {"n_per_center": 16, "image_size": 64}, "external": {"center": ["center_C"]},
                    "split": {"val_frac": 0.25, "test_frac": 0.25}, "audit_examples_per_group": 1},
           "evaluation": {"bootstrap": 100, "band_resamples": 100, "efficiency_runs": 2},
           "reader_study": {"simulate": {"n_junior": 2, "n_senior": 2}},
           "summary": {"band_resamples": 100}}
    code, report, _ = run_study(raw, tmp)
    assert code == 0
    return report


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log in the test output
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the browser closed a connection early
            pass


@pytest.fixture(scope="module")
def server(report):
    handler = functools.partial(_QuietHandler, directory=str(report))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Chromium or ChromeDriver is not installed (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={Path(os.environ.get('TMPDIR', '/tmp')) / 'diffkd-chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _local_links(driver, base: str) -> list[str]:
    hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    return [h.split("#")[0] for h in hrefs if h.startswith(base)]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def _listed_figures(metrics: object) -> list[str]:
    """The PNG files a stage's metrics JSON lists, wherever (``index_section.figures``, ``headline_figures``)."""
    if isinstance(metrics, dict):
        own = [metrics["png"]] if isinstance(metrics.get("png"), str) else []
        return own + _listed_figures(list(metrics.values()))
    if isinstance(metrics, list):
        return [png for item in metrics for png in _listed_figures(item)]
    return []


def _shown_figures(driver) -> int:
    return driver.execute_script(
        f"return Array.from(document.images).filter(i => i.complete && i.naturalWidth > {MIN_FIGURE_PX} "
        f"&& i.naturalHeight > {MIN_FIGURE_PX} && i.getBoundingClientRect().width > {MIN_FIGURE_PX}).length")


def test_every_stage_page_shows_the_figures_its_metrics_list(report, server, browser):
    """The notebooks draw through the inline backend: an MPLBACKEND the runner inherits (``make test``
    exports Agg) must not leave the pages with captions of figures that are not there."""
    metrics_files = sorted(report.glob("[0-9][0-9]_*.metrics.json"))
    listed = {m.name.removesuffix(".metrics.json"): _listed_figures(json.loads(m.read_text())) for m in metrics_files}
    assert sum(len(pngs) for pngs in listed.values()) >= 5  # audit, evaluation (2), reader study, summary
    problems = []
    for notebook, pngs in listed.items():
        for page in (f"{notebook}.html", f"{notebook}.clinician.html"):
            browser.get(f"{server}/{page}")
            shown = _shown_figures(browser)
            if shown < len(pngs):
                problems.append(f"{page}: {shown} figure(s) shown larger than {MIN_FIGURE_PX} px, but its metrics "
                                f"list {len(pngs)}: {', '.join(pngs)}")
            text = browser.execute_script("return document.body.innerText")
            if "TqdmWarning" in text or "IProgress not found" in text:
                problems.append(f"{page}: shows tqdm's IProgress warning")
    assert not problems, "\n".join(problems)


def test_every_page_renders_without_broken_images_links_or_js_errors(report, server, browser, tmp_path):
    pages = ["index.html", "checklist.html"] + sorted(p.name for p in report.glob("[0-9][0-9]_*.html"))
    assert len(pages) >= 2 + 2 * 5
    problems = []
    for page in pages:
        browser.get(f"{server}/{page}")
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.getAttribute('src') ? i.getAttribute('src').slice(0, 80) : '(inline)')")
        problems += [f"{page}: broken image {src}" for src in broken]
        for link in _local_links(browser, server):
            if _status(link) != 200:
                problems.append(f"{page}: broken link {urllib.parse.unquote(link)}")
        errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        problems += [f"{page}: JavaScript/console error: {message}" for message in errors]
    assert not problems, "\n".join(problems)
    browser.get(f"{server}/index.html")
    assert _shown_figures(browser) >= 2  # the headline ROC and the cohort figures
    for page in ("index.html", "90_summary.clinician.html"):
        browser.get(f"{server}/{page}")
        # what a clinician reads first: the headline box, above everything else, with the simulated-data banner
        first = browser.execute_script(
            "const box = document.getElementById('headline'); if (!box) return null;"
            "const r = box.getBoundingClientRect();"
            "return {top: r.top + window.scrollY, height: r.height, text: box.innerText,"
            " tables_above: Array.from(document.querySelectorAll('table, img'))"
            "   .filter(e => e.getBoundingClientRect().top + window.scrollY < r.top + window.scrollY).length};")
        assert first is not None, f"{page}: no headline box"
        assert first["height"] > 100 and first["tables_above"] == 0, (page, first)
        assert SIMULATED_BANNER in first["text"] and "AUC" in first["text"] and "patients" in first["text"], first
    folder = Path(os.environ.get("DIFFKD_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    for page in SCREENSHOTS:
        browser.get(f"{server}/{page}")
        shot = folder / f"{page.removesuffix('.html')}.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000, shot
