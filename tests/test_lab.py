"""The reader's side: the executed notebooks hold their figures, `make lab` serves the
setting that opens the jupytext notebooks as notebooks, and, in headless Chromium, a `.py`
notebook opens as a notebook, an executed notebook shows its figures and the HTML report
loads every image. Screenshots go to build/browser/ for a person to look at.

The browser tests need Chromium (Debian: `apt-get install chromium`) and the playwright
package (installed by `make setup`); they are skipped, saying so, where either is absent."""
from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from tmkd_core import lab
from tmkd_core.htmlreport import html_report, image_outputs

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "notebooks" / "executed"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("0*.py"))
SHOTS = ROOT / "build" / "browser"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def figures_saved(name: str) -> int:
    """How many figures a notebook saves (its `out.figure(` calls)."""
    return len(re.findall(r"\bout\.figure\(", (ROOT / "notebooks" / f"{name}.py").read_text()))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_executed_notebooks_show_every_figure_they_save(name):
    path = EXECUTED / f"{name}.ipynb"
    assert path.exists(), f"{path} missing: `make reproduce` writes it (and it is committed)"
    nb = nbformat.read(path, as_version=4)
    assert "profile" in nb.metadata["papermill"]["parameters"]  # executed by papermill, as make reproduce does
    assert not [c for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert image_outputs(nb) >= figures_saved(name) > 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    """`make lab`'s JupyterLab on a free local port with a token; user settings in a
    temporary folder so that the test sees the project's defaults, not yours."""
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("lab")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(lab.command("--no-browser", "--ip=127.0.0.1", f"--port={port}",
                                        f"--IdentityProvider.token={token}",
                                        f"--LabApp.user_settings_dir={home / 'user-settings'}",
                                        f"--LabApp.workspaces_dir={home / 'workspaces'}",
                                        # a server left behind by a killed test run stops by itself
                                        "--ServerApp.shutdown_no_activity_timeout=300"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(home / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, token
    os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_lab_serves_jupytext_as_the_default_viewer_of_python_files(lab_server):
    url, token = lab_server
    with urllib.request.urlopen(f"{url}/lab/api/settings/@jupyterlab/docmanager-extension:plugin?token={token}") as r:
        settings = json.load(r)
    # overrides.json becomes the schema's default; no user setting changes it here
    assert settings["schema"]["properties"]["defaultViewers"]["default"]["python"] == "Jupytext Notebook"
    # opening a notebook must not rewrite a tracked file (JupyterLab normalises metadata on load)
    assert settings["schema"]["properties"]["autosave"]["default"] is False
    assert "defaultViewers" not in settings["settings"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (make setup installs it)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


IMAGES_LOADED = "[...document.querySelectorAll('{sel}')].filter(i => i.complete && i.naturalWidth > 0).length"


def test_a_click_on_a_py_notebook_opens_a_notebook_and_executed_ones_show_their_figures(lab_server, browser):
    url, token = lab_server
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab?token={token}")
    item = page.locator(".jp-DirListing-item", has_text="02_teachers.py")
    item.wait_for(timeout=60_000)
    item.dblclick()  # what a reader does: the default viewer decides what opens
    page.wait_for_function("document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= 5", timeout=60_000)
    page.screenshot(path=str(SHOTS / "lab_py_opens_as_notebook.png"))
    assert page.locator(".jp-NotebookPanel .jp-MarkdownCell").count() >= 2  # the narrative rendered as markdown
    assert page.locator(".jp-FileEditor").count() == 0  # not the text editor

    name = "01_priors"
    expected = image_outputs(nbformat.read(EXECUTED / f"{name}.ipynb", as_version=4))
    page.goto(f"{url}/lab/tree/executed/{name}.ipynb?token={token}")
    selector = ".jp-NotebookPanel .jp-OutputArea-output img"
    page.wait_for_function(IMAGES_LOADED.format(sel=selector) + f" >= {expected}", timeout=60_000)
    page.locator(selector).first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "lab_executed_notebook_figures.png"))
    page.close()


def test_the_html_reports_figures_say_what_they_show_in_their_alt_text(tmp_path):
    """Each image output's alt text names its notebook and the heading it stands under,
    instead of nbconvert's placeholder; markup in a heading is escaped."""
    png = base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360000002000100e221bc330000000049454e44ae426082")).decode()
    nb = nbformat.v4.new_notebook()
    shown = [nbformat.v4.new_output("display_data", data={"image/png": png})]
    nb.cells = [nbformat.v4.new_code_cell("before", outputs=shown), nbformat.v4.new_markdown_cell("# 03\n## Weights & <views>"),
                nbformat.v4.new_code_cell("a", outputs=shown * 2), nbformat.v4.new_code_cell("text only")]
    nbformat.write(nb, tmp_path / "03_weights.ipynb")
    body = html_report([tmp_path / "03_weights.ipynb"], tmp_path / "report.html").read_text()
    assert re.findall(r'<img alt="([^"]*)"', body) == [
        "Figure of 03_weights: 03_weights"] + 2 * ["Figure of 03_weights: Weights &amp; &lt;views&gt;"]
    assert "No description" not in body


def test_the_html_report_opens_from_disk_with_every_image(browser):
    paths = [EXECUTED / f"{n}.ipynb" for n in NOTEBOOKS]
    expected = sum(image_outputs(nbformat.read(p, as_version=4)) for p in paths)
    report = html_report(paths, SHOTS / "report.html")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(report.resolve().as_uri(), wait_until="load")
    images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0)")
    assert len(images) >= expected > 0 and all(images), f"{images.count(False)} of {len(images)} images failed"
    alts = page.evaluate("[...document.querySelectorAll('.jp-RenderedImage img')].map(i => i.alt)")
    assert len(alts) == expected and all(a.startswith("Figure of 0") for a in alts), alts  # named, not a placeholder
    page.locator("img").nth(expected // 2).scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "report.png"))
    # the answer's forest plots (notebooks 04 and 05): the first image after each heading is loaded
    for heading in ("The answer at a glance", "05 · Ablations"):
        found = page.evaluate(
            """h => { const head = [...document.querySelectorAll('h1, h2')].find(e => e.textContent.includes(h));
                      if (!head) return null;
                      const img = [...document.images].find(i => head.compareDocumentPosition(i) & 4);
                      return img ? img.complete && img.naturalWidth > 0 : false; }""", heading)
        assert found, f"no loaded figure after the heading {heading!r} in {report}"
    page.get_by_text("The answer at a glance").first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "report_forest.png"))
    page.close()
