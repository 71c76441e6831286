"""The documentation site under ``build/docs``: the executed notebooks as offline HTML pages, the reports, an index.

``build_docs(DocsConfig) -> DocsResult`` exports every executed notebook in ``build/notebooks/`` to
``build/docs/<notebook>.html`` (images inlined; no script or style is fetched from the network, so the pages work
offline and from ``file://``), and writes ``index.html`` linking the six notebooks of the recipe book (those not run
yet are listed as such) and every report in ``build/docs/reports/``. :func:`publish_report` copies a report there.

:func:`browser_check` opens the site in headless Chromium (served on 127.0.0.1 only) and reports, for the index and
every page it links, whether it loaded, how many images it has and how many failed to decode, and which links do not
resolve. The CLI is ``plausibility docs [--check]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html as _html
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from recipe_lib.errors import RecipeError

RECIPE_NOTEBOOKS: tuple[tuple[str, str], ...] = (
    ("01_dataset_exploration", "Dataset exploration: labels, scenes and example clips"),
    ("02_zero_shot", "Zero-shot scoring with the critic as it comes"),
    ("03_sft", "Supervised fine-tuning on labelled clips"),
    ("04_rl_grpo", "Reinforcement learning (GRPO) with a dense reward"),
    ("05_custom_dataset", "Bringing your own labelled videos"),
    ("06_evaluation", "Evaluating critics side by side; filtering and thresholds"),
)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plausibility-recipes — executed recipe book</title>
<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}
li{margin:.45em 0}small,.muted{color:#666}.missing{color:#999}code{background:#f4f4f4;padding:0 3px}
.metrics{font-size:.85em;color:#555}</style></head>
<body><h1>plausibility-recipes</h1>
<p>The recipe book as executed on this machine: each notebook with its outputs, and the reports it wrote.</p>
<h2>Notebooks</h2><ol id="notebooks">{% for nb in notebooks %}
{% if nb.href %}<li class="present"><a href="{{ nb.href }}">{{ nb.stem }}</a> — {{ nb.title }}
{% if nb.metrics %}<div class="metrics">{% for k, v in nb.metrics %}{{ k }} = {{ v }}
{%- if not loop.last %} · {% endif %}{% endfor %}</div>{% endif %}</li>
{% else %}<li class="missing">{{ nb.stem }} — {{ nb.title }} <small>(not yet run:
<code>plausibility notebooks run {{ nb.stem }}</code>)</small></li>{% endif %}{% endfor %}</ol>
<h2>Reports</h2>{% if reports %}<ul id="reports">{% for name, href in reports %}
<li><a href="{{ href }}">{{ name }}</a></li>{% endfor %}</ul>
{% else %}<p class="muted">No report yet (notebook 06 and <code>plausibility score</code> write them).</p>{% endif %}
</body></html>
"""

# nbconvert's lab template, minus everything it would fetch from a CDN (require.js, MathJax, widgets, mermaid):
# markdown is rendered when exporting, and the recipe's notebooks use none of those.
_PAGE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}{{ super() }}
<nav style="padding:.5em 1em;font-family:system-ui,sans-serif"><a href="index.html">&larr; recipe book index</a></nav>
{%- endblock body_header -%}
"""


@dataclasses.dataclass
class NotebookPage:
    stem: str
    title: str
    href: str | None
    metrics: list[tuple[str, str]]


def _headline_metrics(path: Path, limit: int = 6) -> list[tuple[str, str]]:
    """A few scalar numbers from a notebook's metrics.json for the index (nested dicts are skipped)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for key, value in data.items() if isinstance(data, dict) else []:
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append((str(key), f"{value:.3f}" if isinstance(value, float) else str(value)))
        if len(out) >= limit:
            break
    return out


def write_docs_index(docs_dir: Path) -> Path:
    """Write ``index.html``: the six recipe notebooks (linked when ``<stem>.html`` exists, else "not yet run"), any
    other ``NN_*.html`` page, and every ``reports/**.html``."""
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    metrics_root = docs_dir.parent
    known = dict(RECIPE_NOTEBOOKS)
    stems = list(known) + sorted(p.stem for p in docs_dir.glob("[0-9][0-9]_*.html") if p.stem not in known)
    notebooks = []
    for stem in stems:
        page = docs_dir / f"{stem}.html"
        notebooks.append(
            NotebookPage(
                stem=stem,
                title=known.get(stem, stem.split("_", 1)[-1].replace("_", " ")),
                href=page.name if page.exists() else None,
                metrics=_headline_metrics(metrics_root / stem / "metrics.json") if page.exists() else [],
            )
        )
    reports = [
        (str(p.relative_to(docs_dir / "reports").with_suffix("")), os.path.relpath(p, docs_dir).replace(os.sep, "/"))
        for p in sorted((docs_dir / "reports").rglob("*.html"))
    ]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(_INDEX).render(notebooks=notebooks, reports=reports)
    index = docs_dir / "index.html"
    tmp = index.with_name("index.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)
    return index


def export_notebook_html(executed: Path, out_dir: Path) -> Path:
    """Export an executed notebook to a standalone, offline HTML page ``out_dir/<stem>.html`` (images inlined)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    try:
        nb = nbformat.read(executed, as_version=4)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read executed notebook {executed}: {exc}") from exc
    exporter = HTMLExporter(
        embed_images=True,
        extra_loaders=[DictLoader({"plausibility_docs.html.j2": _PAGE_TEMPLATE})],
        template_file="plausibility_docs.html.j2",
    )
    body, _ = exporter.from_notebook_node(nb)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{executed.stem}.html"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(target)
    return target


def publish_report(html: Path, name: str | None = None, docs_dir: Path | None = None) -> Path:
    """Copy a self-contained report into ``build/docs/reports/<name>.html`` (and refresh the index)."""
    from recipe_lib.config import build_dir

    html = Path(html)
    if not html.is_file():
        raise RecipeError(f"report not found: {html}")
    docs_dir = Path(docs_dir or build_dir() / "docs")
    name = name or html.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise RecipeError(f"report name {name!r} must be letters, digits, '.', '_' or '-'")
    target = docs_dir / "reports" / f"{name}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(html, tmp)
    tmp.replace(target)
    write_docs_index(docs_dir)
    return target


@dataclasses.dataclass
class DocsConfig:
    notebooks_dir: Path | None = None  # executed notebooks; default build/notebooks
    docs_dir: Path | None = None  # default build/docs


@dataclasses.dataclass
class DocsResult:
    index: Path
    exported: list[Path]
    missing: list[str]
    reports: list[Path]


def build_docs(cfg: DocsConfig | None = None) -> DocsResult:
    """Export every executed notebook as an offline page and write the index (see the module docstring)."""
    from recipe_lib.config import build_dir

    cfg = cfg or DocsConfig()
    nb_dir = Path(cfg.notebooks_dir or build_dir() / "notebooks")
    docs_dir = Path(cfg.docs_dir or build_dir() / "docs")
    exported = [export_notebook_html(nb, docs_dir) for nb in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))]
    index = write_docs_index(docs_dir)
    missing = [stem for stem, _ in RECIPE_NOTEBOOKS if not (docs_dir / f"{stem}.html").exists()]
    reports = sorted((docs_dir / "reports").rglob("*.html"))
    return DocsResult(index=index, exported=exported, missing=missing, reports=reports)


# ---------------------------------------------------------------------------------------------------------------------
# Headless browser check
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PageCheck:
    url: str
    loaded: bool
    title: str
    images: int
    broken_images: int
    links: list[str]
    counts: dict[str, int]  # selector -> number of matching elements
    error: str | None = None


@dataclasses.dataclass
class BrowserCheck:
    pages: list[PageCheck]
    broken_links: list[str]

    @property
    def ok(self) -> bool:
        return not self.broken_links and all(p.loaded and p.broken_images == 0 for p in self.pages)

    def problems(self) -> list[str]:
        out = [f"link does not resolve: {u}" for u in self.broken_links]
        for p in self.pages:
            if not p.loaded:
                out.append(f"{p.url}: did not load ({p.error or 'no load event'})")
            elif p.broken_images:
                out.append(f"{p.url}: {p.broken_images} of {p.images} images failed to load")
        return out


_HARNESS = """<!doctype html><html><head><meta charset="utf-8"><title>site check</title></head><body>
<pre id="result">pending</pre>
<script>
var PAGES = __PAGES__, SELECTORS = __SELECTORS__, FOLLOW = __FOLLOW__;
var results = [], linkSet = {};
function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
function checkPage(url) {
  return new Promise(function (resolve) {
    var frame = document.createElement("iframe");
    var done = false;
    frame.style.width = "1200px"; frame.style.height = "800px";
    var timer = setTimeout(function () {
      if (!done) { done = true; resolve({url: url, loaded: false, error: "timeout"}); }
    }, 20000);
    frame.onload = async function () {
      if (done) { return; }
      var doc;
      try { doc = frame.contentDocument; } catch (e) { doc = null; }
      if (!doc) { done = true; clearTimeout(timer); resolve({url: url, loaded: false, error: "no document"}); return; }
      for (var i = 0; i < 50; i++) {
        var imgs = doc.images, pending = 0;
        for (var k = 0; k < imgs.length; k++) { if (!imgs[k].complete) { pending++; } }
        if (!pending) { break; }
        await sleep(100);
      }
      var imgs = doc.images, broken = 0;
      for (var k = 0; k < imgs.length; k++) {
        if (!imgs[k].complete || imgs[k].naturalWidth === 0) { broken++; }
      }
      var links = [];
      var anchors = doc.querySelectorAll("a[href]");
      for (var a = 0; a < anchors.length; a++) {
        var href = anchors[a].getAttribute("href");
        if (!href || href.charAt(0) === "#" || /^[a-z]+:/i.test(href)) { continue; }
        links.push(new URL(href, frame.contentWindow.location.href).pathname);
      }
      var counts = {};
      SELECTORS.forEach(function (s) { counts[s] = doc.querySelectorAll(s).length; });
      done = true; clearTimeout(timer);
      resolve({url: url, loaded: true, title: doc.title, images: imgs.length, broken_images: broken,
               links: links, counts: counts});
      frame.remove();
    };
    frame.src = url;
    document.body.appendChild(frame);
  });
}
(async function () {
  var queue = PAGES.slice(), seen = {};
  PAGES.forEach(function (p) { seen[p] = true; });
  var broken = [];
  while (queue.length) {
    var url = queue.shift();
    var r = await checkPage(url);
    results.push(r);
    if (FOLLOW && r.links) {
      for (var i = 0; i < r.links.length; i++) {
        var link = r.links[i];
        if (seen[link]) { continue; }
        seen[link] = true;
        var resp = null;
        try { resp = await fetch(link); } catch (e) { resp = null; }
        if (!resp || !resp.ok) { broken.push(link); continue; }
        if (/\\.html?$/.test(link)) { queue.push(link); }
      }
    }
  }
  document.getElementById("result").textContent = JSON.stringify({pages: results, broken_links: broken});
})();
</script></body></html>
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    harness = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] == "/__site_check__.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.harness)))
            self.end_headers()
            self.wfile.write(self.harness)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        return


@contextlib.contextmanager
def serve_directory(root: Path, harness: bytes = b"") -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = type("SiteHandler", (_Handler,), {"harness": harness})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def chromium_available() -> bool:
    return CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)


def run_chromium(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with the flags for an isolated, offline run (a throwaway profile folder)."""
    if not chromium_available():
        raise RecipeError(f"Chromium not found at {CHROMIUM}", hint="apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise RecipeError(f"Chromium did not finish within {timeout:.0f} s") from exc


def browser_check(
    root: Path,
    pages: Sequence[str] = ("index.html",),
    follow_links: bool = True,
    selectors: Sequence[str] = (),
    timeout: float = 180,
) -> BrowserCheck:
    """Open ``pages`` (paths relative to ``root``) in headless Chromium, served from 127.0.0.1, follow their relative
    links (each must resolve; linked HTML pages are checked in turn), and count images that failed to decode
    (``naturalWidth == 0``). ``selectors`` are CSS selectors whose matches are counted on every page."""
    root = Path(root)
    for page in pages:
        if not (root / page).is_file():
            raise RecipeError(f"page not found: {root / page}")
    harness = (
        _HARNESS.replace("__PAGES__", _js(["/" + p.lstrip("/") for p in pages]))
        .replace("__SELECTORS__", _js(list(selectors)))
        .replace("__FOLLOW__", "true" if follow_links else "false")
        .encode()
    )
    with serve_directory(root, harness) as base:
        proc = run_chromium(
            ["--virtual-time-budget=120000", "--dump-dom", f"{base}/__site_check__.html"], timeout=timeout
        )
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.DOTALL)
    if not match or match.group(1).strip() == "pending":
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise RecipeError("the browser check did not finish", hint=" / ".join(tail) or "no output from Chromium")
    data = json.loads(_html.unescape(match.group(1)))
    checks = [
        PageCheck(
            url=p["url"],
            loaded=bool(p.get("loaded")),
            title=p.get("title") or "",
            images=int(p.get("images") or 0),
            broken_images=int(p.get("broken_images") or 0),
            links=list(p.get("links") or []),
            counts={k: int(v) for k, v in (p.get("counts") or {}).items()},
            error=p.get("error"),
        )
        for p in data["pages"]
    ]
    return BrowserCheck(pages=checks, broken_links=list(data["broken_links"]))


def _js(value: Any) -> str:
    """JSON safe to place inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def screenshot(page: Path, out_png: Path, width: int = 1300, height: int = 1800, timeout: float = 120) -> Path:
    """A PNG of a local HTML file as headless Chromium renders it."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    proc = run_chromium(
        [
            f"--window-size={width},{height}",
            "--virtual-time-budget=10000",
            f"--screenshot={out_png}",
            Path(page).resolve().as_uri(),
        ],
        timeout=timeout,
    )
    if not out_png.exists():
        raise RecipeError(f"Chromium wrote no screenshot of {page}", hint=(proc.stderr or "").strip()[-300:])
    return out_png
