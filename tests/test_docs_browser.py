"""The exported pages, the documentation site and the reports in a real headless Chromium (served on 127.0.0.1, or
from file://). The site built from a newcomer's kernel is tested in test_docs_site.py."""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from recipe_lib.docs import (
    RECIPE_NOTEBOOKS,
    DocsConfig,
    SiteConfig,
    browser_check,
    build_docs,
    build_site,
    chromium_available,
    publish_report,
    run_chromium,
    write_docs_index,
)
from support import run_cli

needs_chromium = pytest.mark.skipif(
    not chromium_available(), reason="headless Chromium not installed at /usr/bin/chromium (apt-get install chromium)"
)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.missing: list[str] = []
        self._li_class: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self.links.append(a["href"])
        if tag == "li":
            self._li_class = a.get("class")

    def handle_data(self, data):
        if self._li_class == "missing" and re.match(r"\d\d_", data.strip()):
            self.missing.append(data.strip().split()[0])


def _executed_notebook(folder: Path, stem: str) -> Path:
    """Run a small notebook with a figure in the project's kernel (nbclient), as run_notebook would."""
    from nbclient import NotebookClient

    from recipe_lib.notebooks import ensure_kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A page\nWith a <b>figure</b>."),
        nbformat.v4.new_code_cell(
            "%matplotlib inline\nfrom matplotlib.figure import Figure\n"
            "fig = Figure(figsize=(3, 2))\nfig.add_subplot().bar(['1', '2', '5'], [1, 2, 4])\nfig"
        ),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    NotebookClient(
        nb, kernel_name=ensure_kernel(), timeout=120, resources={"metadata": {"path": str(folder)}}
    ).execute()
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


def test_index_links_present_notebooks_and_reports(tmp_path):
    docs = tmp_path / "docs"
    (docs / "reports" / "runs").mkdir(parents=True)
    (docs / "02_zero_shot.html").write_text("<html><body>02</body></html>")
    (docs / "07_extra.html").write_text("<html><body>07</body></html>")
    (docs / "reports" / "06_evaluation.html").write_text("<html></html>")
    (docs / "reports" / "runs" / "score & more.html").write_text("<html></html>")
    (tmp_path / "02_zero_shot").mkdir()
    (tmp_path / "02_zero_shot" / "metrics.json").write_text('{"accuracy": 0.25, "n": 80, "nested": {"a": 1}}')
    index = write_docs_index(docs)
    parser = Links()
    parser.feed(index.read_text())
    assert parser.links == [
        "02_zero_shot.html",
        "07_extra.html",
        "reports/06_evaluation.html",
        "reports/runs/score & more.html",
    ]
    assert sorted(parser.missing) == sorted(s for s, _ in RECIPE_NOTEBOOKS if s != "02_zero_shot")
    assert "accuracy = 0.250" in index.read_text() and "nested" not in index.read_text()


def test_exported_pages_are_offline(tmp_path):
    nb_dir = tmp_path / "notebooks"
    _executed_notebook(nb_dir, "01_dataset_exploration")
    result = build_docs(DocsConfig(notebooks_dir=nb_dir, docs_dir=tmp_path / "docs"))
    page = (tmp_path / "docs" / "01_dataset_exploration.html").read_text()
    assert result.exported and "data:image/png;base64," in page
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page)  # nothing fetched from a CDN
    assert 'href="index.html"' in page
    assert "01_dataset_exploration" not in result.missing and "06_evaluation" in result.missing


@needs_chromium
def test_site_in_browser(tmp_path):
    nb_dir = tmp_path / "notebooks"
    _executed_notebook(nb_dir, "01_dataset_exploration")
    docs = tmp_path / "docs"
    report = tmp_path / "r.html"
    report.write_text(
        '<!doctype html><html><body><img alt="dot" src="data:image/png;base64,'
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        '"></body></html>'
    )
    publish_report(report, "tiny", docs_dir=docs)
    build_docs(DocsConfig(notebooks_dir=nb_dir, docs_dir=docs))
    check = browser_check(docs)
    assert check.ok, check.problems()
    pages = {p.url: p for p in check.pages}
    assert set(pages) == {"/index.html", "/01_dataset_exploration.html", "/reports/tiny.html"}
    assert pages["/01_dataset_exploration.html"].images >= 1 and pages["/reports/tiny.html"].images == 1
    assert "/index.html" in pages["/01_dataset_exploration.html"].links  # the way back
    pages_only = ("docs", "--notebooks-dir", str(nb_dir), "--docs-dir", str(docs), "--pages-only")
    proc = run_cli(*pages_only, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not yet run: 06_evaluation" in proc.stdout and "every image decoded" in proc.stdout
    (docs / "reports" / "tiny.html").write_text('<html><body><img alt="x" src="gone.png"></body></html>')
    proc = run_cli(*pages_only, "--check")
    assert proc.returncode == 1 and "error: /reports/tiny.html: 1 of 1 images failed to load" in proc.stdout


@needs_chromium
def test_browser_check_catches_broken_images_and_links(tmp_path, monkeypatch, request):
    # the temporary folder of this check alone, so that what Chromium leaves there is seen (short: sockets go there)
    scratch = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    (tmp_path / "index.html").write_text(
        '<html><body><a href="good.html">good</a> <a href="nowhere.html">gone</a></body></html>'
    )
    (tmp_path / "good.html").write_text(
        '<html><body><img alt="a" src="missing.png"><img alt="b" src="data:image/png;base64,AAAA"></body></html>'
    )
    check = browser_check(tmp_path)
    assert not check.ok
    assert check.broken_links == ["/nowhere.html"]
    good = next(p for p in check.pages if p.url == "/good.html")
    assert good.loaded and good.images == 2 and good.broken_images == 2
    assert any("2 of 2 images failed" in p for p in check.problems())
    # Chromium and every process it started are stopped, its profile and its own temporary folders removed
    assert list(scratch.iterdir()) == []


@needs_chromium
def test_score_report_of_real_clips_in_browser(tiny_critic, shared_videos, tmp_path):
    out = tmp_path / "scored"
    proc = run_cli("score", str(shared_videos[0].parent), "--out", str(out), "--model", str(tiny_critic))
    assert proc.returncode == 0, proc.stderr
    for name in ("predictions.csv", "predictions.jsonl", "manifest.csv", "report.html", "evaluation_results.json"):
        assert (out / name).exists(), name
    with (out / "manifest.csv").open() as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == len(shared_videos) and {r["decision"] for r in manifest} <= {"keep", "reject"}
    check = browser_check(out, pages=["report.html"], follow_links=False, selectors=["tr.sample", "img.thumb"])
    page = check.pages[0]
    assert page.loaded and page.broken_images == 0, check.problems()
    assert page.counts["tr.sample"] == len(shared_videos)  # every clip is in the report
    assert page.counts["img.thumb"] == len(shared_videos)  # each with a decoded thumbnail
    # The filters work in the browser: a link can preset them, the script hides the other rows.
    n_reject = sum(r["decision"] == "reject" for r in manifest)
    dom = run_chromium(
        ["--virtual-time-budget=5000", "--dump-dom", (out / "report.html").resolve().as_uri() + "#decision=reject"]
    ).stdout
    assert f'<span id="shown">{n_reject}</span>' in dom
    hidden = len(re.findall(r'<tr class="sample"[^>]*style="display: none;"', dom))
    assert hidden == len(shared_videos) - n_reject


@pytest.mark.slow
@needs_chromium
def test_docs_site_after_notebook_06():
    from recipe_lib.config import build_dir
    from recipe_lib.notebooks import run_notebook

    run_notebook("06_evaluation", timeout=900)
    result = build_docs()
    assert "06_evaluation" not in result.missing
    check = browser_check(build_dir() / "docs", selectors=["tr.sample"])
    assert check.ok, check.problems()
    pages = {p.url: p for p in check.pages}
    assert pages["/06_evaluation.html"].images >= 3
    assert pages["/reports/06_evaluation.html"].counts["tr.sample"] >= 40
    # The site links the report the notebook published, and shows the notebook with its figures.
    site = build_site(SiteConfig())
    assert "06_evaluation" in site.notebooks and "06_evaluation" in site.reports and not site.stderr_pages
    check = browser_check(site.index.parent, selectors=["tr.sample"])
    assert check.ok, check.problems()
    pages = {p.url: p for p in check.pages}
    assert pages["/notebooks/06_evaluation.html"].images >= 3
    assert pages["/reports/06_evaluation.html"].counts["tr.sample"] >= 40
    assert "/reports/06_evaluation.html" in pages["/reports.html"].links
