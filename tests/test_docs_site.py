"""The documentation site (mkdocs-material + mkdocs-jupyter): built strict from the guides, the executed notebooks, the
CLI reference generated from the parsers and the published reports; checked for broken links, missing images, pages
loaded from another host and stderr; opened in a real headless Chromium. The main test executes a real recipe notebook
in the kernel a newcomer gets — `make venv` installs no `lab` extra, so no ipywidgets — and fails on any stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from notebook_outputs import html_stderr_boxes, stderr_outputs
from recipe_lib.docs import (
    SiteConfig,
    browser_check,
    build_site,
    check_site,
    chromium_available,
    cli_reference,
    publish_report,
    screenshot,
)
from recipe_lib.errors import RecipeError
from support import REPO, run_cli

needs_chromium = pytest.mark.skipif(
    not chromium_available(), reason="headless Chromium not installed at /usr/bin/chromium (apt-get install chromium)"
)
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
REPORT = f'<!doctype html><html><body><h1>r</h1><img alt="dot" src="data:image/png;base64,{PNG_1PX}"></body></html>'


def _probe(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "plausibility-recipes", "language": "python", "display_name": "Python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(nb, path)
    return path


def _stdout(path: Path, cell: int) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for o in nb.cells[cell].outputs if o.get("name") == "stdout")


@pytest.mark.slow
@needs_chromium
def test_site_from_a_newcomer_kernel(newcomer_kernels, tiny_critic, tmp_path, monkeypatch):
    from recipe_lib.demo import demo_eval_split
    from recipe_lib.notebooks import run_notebook

    # The kernel is a newcomer's: ipywidgets cannot be imported, and tqdm.auto (which datasets imports) complains there.
    probe = run_notebook(
        str(
            _probe(
                tmp_path / "probe.ipynb",
                "try:\n    import ipywidgets\nexcept ImportError as e:\n    print(e)",
                "import importlib, warnings, tqdm.autonotebook\nwith warnings.catch_warnings(record=True) as w:\n"
                "    warnings.simplefilter('always')\n    importlib.reload(tqdm.autonotebook)\n"
                "print([str(x.message) for x in w])",
            )
        ),
        html=False,
        out_dir=tmp_path / "probe-out",
    )
    assert "no ipywidgets" in _stdout(probe.output, 0)
    assert "IProgress not found" in _stdout(probe.output, 1) and stderr_outputs(probe.output) == []

    # A real recipe notebook in that kernel, in a build folder of its own (the session's demo critic and eval split).
    eval_split = demo_eval_split()
    build = tmp_path / "build"
    (build / "models").mkdir(parents=True)
    (build / "models" / "tiny-critic").symlink_to(tiny_critic)
    monkeypatch.setenv("PLAUSIBILITY_BUILD_DIR", str(build))
    params = {"eval_data": str(eval_split), "limit": 16, "tasks": "pc"}
    run = run_notebook("02_zero_shot", params, html=False, out_dir=build / "notebooks", timeout=600)
    assert run.metrics["n"] == 16 and run.metrics["coverage"] == 1.0
    assert stderr_outputs(run.output) == []  # no progress bar, no tqdm advice, no warning

    # Beside it, files that are not notebooks: each a counted skip with its reason, never a traceback.
    (build / "notebooks" / "01_dataset_exploration.ipynb").write_text("[1, 2, 3]")
    (build / "notebooks" / "03_sft.ipynb").write_text('{"cells": [')
    (build / "notebooks" / "04_rl_grpo.ipynb").write_text('{"metadata": {}}')
    report = tmp_path / "report.html"
    report.write_text(REPORT)
    publish_report(report, "tiny", docs_dir=build / "docs")
    proc = run_cli("docs")  # build/notebooks -> build/docs (standalone pages) and build/site
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    out = proc.stdout
    assert "skipped 01_dataset_exploration.ipynb: " in out and "is not a notebook: it holds a JSON list" in out
    assert "skipped 03_sft.ipynb: " in out and "not valid JSON" in out
    assert "skipped 04_rl_grpo.ipynb: " in out and "an object without 'cells'" in out
    assert "1 exported, 3 skipped, 1 reports" in out and "warning" not in out
    site_dir = build / "site"
    assert f"site: {site_dir / 'index.html'}" in out
    assert html_stderr_boxes(build / "docs" / "02_zero_shot.html") == 0
    assert not (build / "docs" / "01_dataset_exploration.html").exists()
    assert "could not be read" in (site_dir / "notebooks" / "01_dataset_exploration.html").read_text()
    assert "Not run yet" in (site_dir / "notebooks" / "05_custom_dataset.html").read_text()
    assert check_site(site_dir).ok and check_site(site_dir).stderr_pages == []
    search = (site_dir / "search" / "search_index.json").read_text()
    assert "Cosmos-Reason2" in search and "--threshold" in search  # a guide and the generated CLI reference

    check = browser_check(site_dir, selectors=["nav.md-nav", ".jp-OutputArea-output img"])
    assert check.ok, check.problems()
    opened = {p.url for p in check.pages}
    every_page = {"/" + p.relative_to(site_dir).as_posix() for p in site_dir.rglob("*.html")} - {"/404.html"}
    assert opened == every_page  # each page is reachable from the home page, and each rendered
    pages = {p.url: p for p in check.pages}
    assert all(p.counts["nav.md-nav"] >= 1 for u, p in pages.items() if not u.startswith("/reports/"))
    assert pages["/notebooks/02_zero_shot.html"].counts[".jp-OutputArea-output img"] >= 2  # its figures
    assert pages["/reports/tiny.html"].images == 1
    assert "/reports/tiny.html" in pages["/reports.html"].links

    from PIL import Image

    for page in ("index.html", "notebooks/02_zero_shot.html"):
        png = screenshot(site_dir / page, tmp_path / f"{Path(page).stem}.png", width=1200, height=900)
        with Image.open(png) as img:
            colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert img.size == (1200, 900) and colours and len(colours) > 50, page  # drawn, not a blank page


@pytest.mark.slow
def test_strict_build_fails_on_a_broken_link(tmp_path):
    sources = tmp_path / "sources"
    shutil.copytree(REPO / "docs", sources / "docs")
    shutil.copy(REPO / "mkdocs.yml", sources / "mkdocs.yml")
    with (sources / "docs" / "guides" / "ray.md").open("a") as fh:
        fh.write("\nSee [the missing page](no-such-page.md).\n")
    with pytest.raises(RecipeError, match="did not build") as caught:
        build_site(SiteConfig(notebooks_dir=tmp_path / "none", site_dir=tmp_path / "site", sources=sources))
    assert "no-such-page.md" in (caught.value.hint or "")


def test_cli_reference_is_the_parsers_help():
    from recipe_lib.cli import build_parser

    page = cli_reference()
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert f"## `plausibility {name}`" in page, name
        for option in command._option_string_actions:
            assert option in page, (name, option)
    assert "`plausibility prepare custom`" in page and "--scale-labels" in page  # nested sub-commands too


def test_check_site_finds_what_mkdocs_cannot_see(tmp_path):
    site = tmp_path / "site"
    (site / "notebooks").mkdir(parents=True)
    (site / "index.html").write_text('<a href="notebooks/a.html">a</a><a href="https://example.org/">out</a>')
    (site / "notebooks" / "a.html").write_text(
        f'<img alt="ok" src="data:image/png;base64,{PNG_1PX}"><a href="../index.html#top">home</a>'
    )
    assert check_site(site).ok and check_site(site).pages == 2
    (site / "notebooks" / "b.html").write_text(
        '<a href="../gone.html">x</a><img alt="x" src="missing.png"><img alt="y" src="data:image/png;base64,AAAA">'
        '<script src="https://cdn.example.org/lib.js"></script><link rel="stylesheet" href="//fonts.example.org/f.css">'
        '<div data-mime-type="application/vnd.jupyter.stderr"><pre>warning</pre></div>'
    )
    check = check_site(site)
    assert not check.ok
    joined = "\n".join(check.problems)
    for fragment in (
        "links to ../gone.html",
        "loads missing.png",
        "an inline image does not decode",
        "loads https://cdn.example.org/lib.js from another host",
        "loads //fonts.example.org/f.css from another host",
    ):
        assert fragment in joined, fragment
    assert len(check.problems) == 5 and check.stderr_pages == ["notebooks/b.html: 1 stderr box(es)"]
    assert json.dumps(check.problems)  # plain strings, printable one a line
