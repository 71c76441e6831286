"""The documentation site, and the offline pages it is made of.

**The site** (:func:`build_site`, ``plausibility docs``, ``make docs``, the end of ``make demo``): mkdocs-material with
mkdocs-jupyter, built in strict mode into ``build/site``. Its sources are ``docs/`` (the guides, as Markdown) and
``mkdocs.yml``; :func:`build_site` copies them into ``build/site-src`` and adds what is generated: the executed
notebooks of ``build/notebooks`` (a placeholder page for one not run yet, or one that cannot be read), the CLI
reference written from the argparse parsers :func:`recipe_lib.cli.build_parser` builds, ``benchmarks/README.md``, and
the reports published under ``build/docs/reports``. mkdocs' strict mode fails the build on a broken link, anchor or
nav entry; :func:`check_site` then looks where mkdocs cannot (inside rendered notebooks and reports): every relative
``href``/``src`` must resolve, nothing may be loaded from another host, no page may show a stderr box.

**Exported pages** (:func:`build_docs`, :func:`publish_report`): every executed notebook as one standalone HTML page
``build/docs/<notebook>.html`` (images inlined, nothing fetched from the network), an index of them, and
``build/docs/reports/``. A file that is not a readable notebook is skipped with its reason; the others are exported.

:func:`browser_check` opens a site in headless Chromium (served on 127.0.0.1 only) and reports, for the index and
every page it links, whether it loaded, how many images it has and how many failed to decode, and which links do not
resolve.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import http.server
import io
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from recipe_lib.errors import RecipeError
from recipe_lib.resources import REPO_ROOT, SOURCE_CHECKOUT

RECIPE_NOTEBOOKS: tuple[tuple[str, str], ...] = (
    ("01_dataset_exploration", "Dataset exploration: labels, scenes and example clips"),
    ("02_zero_shot", "Zero-shot scoring with the critic as it comes"),
    ("03_sft", "Supervised fine-tuning on labelled clips"),
    ("04_rl_grpo", "Reinforcement learning (GRPO) with a dense reward"),
    ("05_custom_dataset", "Bringing your own labelled videos"),
    ("06_evaluation", "Evaluating critics side by side; filtering and thresholds"),
    ("07_at_scale", "Scoring on a Ray cluster, checked against one process"),
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
    """Write ``index.html``: the recipe notebooks (linked when ``<stem>.html`` exists, else "not yet run"), any
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


def read_notebook(path: Path) -> Any:
    """An executed notebook as an nbformat v4 node; a :class:`RecipeError` naming what is wrong when the file is not
    one (unreadable, not JSON, JSON that is not a notebook object, a notebook that fails nbformat's schema)."""
    import nbformat

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecipeError(f"{path} is not a notebook: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or "cells" not in data:
        kind = "an object without 'cells'" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise RecipeError(f"{path} is not a notebook: it holds {kind}", hint="re-run the notebook to write it again")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
        nbformat.validate(nb)
    except (nbformat.ValidationError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{path} is not a valid notebook: {reason}") from exc
    return nb


def export_notebook_html(executed: Path, out_dir: Path) -> Path:
    """Export an executed notebook to a standalone, offline HTML page ``out_dir/<stem>.html`` (images inlined)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = read_notebook(executed)
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
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # (file, reason)


def build_docs(cfg: DocsConfig | None = None) -> DocsResult:
    """Export every executed notebook as an offline page and write the index (see the module docstring). A file
    that is not a readable notebook is skipped with its reason, and its stale page removed; the others are
    exported."""
    from recipe_lib.config import build_dir

    cfg = cfg or DocsConfig()
    nb_dir = Path(cfg.notebooks_dir or build_dir() / "notebooks")
    docs_dir = Path(cfg.docs_dir or build_dir() / "docs")
    exported: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for nb in sorted(nb_dir.glob("[0-9][0-9]_*.ipynb")):
        try:
            exported.append(export_notebook_html(nb, docs_dir))
        except RecipeError as exc:
            skipped.append((nb, exc.message))
            (docs_dir / f"{nb.stem}.html").unlink(missing_ok=True)
    index = write_docs_index(docs_dir)
    missing = [stem for stem, _ in RECIPE_NOTEBOOKS if not (docs_dir / f"{stem}.html").exists()]
    reports = sorted((docs_dir / "reports").rglob("*.html"))
    return DocsResult(index=index, exported=exported, missing=missing, reports=reports, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------------------
# The site (mkdocs-material + mkdocs-jupyter)
# ---------------------------------------------------------------------------------------------------------------------

MKDOCS_FILE = "mkdocs.yml"
SITE_SOURCES = "docs"
STDERR_MIME = "application/vnd.jupyter.stderr"  # nbconvert marks a stderr stream's box with data-mime-type="..."
# Elements whose src/href the browser loads while showing a page (an <a> is only followed when clicked).
_LOADED = {"script": "src", "img": "src", "iframe": "src", "source": "src", "video": "src", "audio": "src"}


@dataclasses.dataclass
class SiteConfig:
    notebooks_dir: Path | None = None  # executed notebooks; default build/notebooks
    reports_dir: Path | None = None  # published reports; default build/docs/reports
    site_dir: Path | None = None  # default build/site
    sources: Path | None = None  # the folder holding mkdocs.yml and docs/; default the checkout


@dataclasses.dataclass
class SiteResult:
    index: Path
    pages: list[Path]  # every HTML page written
    notebooks: list[str]  # notebooks rendered from their executed copy
    missing: list[str]  # recipe notebooks not run yet (a placeholder page says how)
    skipped: list[tuple[Path, str]]  # executed notebooks that could not be read, with the reason
    reports: list[str]
    stderr_pages: list[str]  # "page: N stderr box(es)" for pages that show stderr output
    seconds: float


def site_sources(root: Path | None = None) -> Path | None:
    """The folder holding ``mkdocs.yml`` and ``docs/`` (a checkout of the repository); None for an installed package,
    which ships the notebooks but not the site's sources."""
    root = Path(root) if root is not None else (REPO_ROOT if SOURCE_CHECKOUT else None)  # type: ignore[arg-type]
    if root is None or not ((root / MKDOCS_FILE).is_file() and (root / SITE_SOURCES).is_dir()):
        return None
    return root


def _placeholder_notebook(stem: str, title: str, why: str) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}: {title}\n\n{why}")]
    return nb


def _stage_notebooks(nb_dir: Path, target: Path) -> tuple[list[str], list[str], list[tuple[Path, str]]]:
    """Copy each recipe notebook's executed copy into ``target`` (a placeholder page for one not run yet or not
    readable); returns (rendered, missing, skipped)."""
    import nbformat

    target.mkdir(parents=True, exist_ok=True)
    rendered, missing, skipped = [], [], []
    for stem, title in RECIPE_NOTEBOOKS:
        executed = nb_dir / f"{stem}.ipynb"
        if not executed.exists():
            missing.append(stem)
            why = (
                f"Not run yet on this machine: `plausibility notebooks run {stem}` (or `make demo`), then `make docs`."
            )
            nb = _placeholder_notebook(stem, title, why)
        else:
            try:
                nb = read_notebook(executed)
                rendered.append(stem)
            except RecipeError as exc:
                skipped.append((executed, exc.message))
                nb = _placeholder_notebook(stem, title, f"The executed copy could not be read: {exc.message}")
        nbformat.write(nb, target / f"{stem}.ipynb")
    return rendered, missing, skipped


def cli_reference() -> str:
    """The CLI reference page: every command's ``--help`` text, as the parsers of :mod:`recipe_lib.cli` print it."""
    import argparse

    from recipe_lib.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
        for action in parser._actions:  # argparse keeps its sub-parsers only here
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
        return []

    def sections(parser: argparse.ArgumentParser, level: int) -> Iterator[str]:
        for _, help_text, sub in subcommands(parser):
            yield f"{'#' * level} `{sub.prog}`\n\n{help_text[:1].upper() + help_text[1:]}.\n" if help_text else ""
            yield f"```text\n{sub.format_help().rstrip()}\n```\n"
            yield from sections(sub, min(level + 1, 4))

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps help text to the terminal's width: a fixed width, the same page
    try:
        top = build_parser()
        overview = "\n".join(f"| [`{s.prog}`](#{_anchor(s.prog)}) | {h} |" for _, h, s in subcommands(top))
        body = "\n".join(part for part in sections(top, 2) if part)
        head = top.format_help().rstrip()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return (
        "# CLI reference\n\nWritten when the site is built, from the parsers the `plausibility` command itself uses "
        "(`recipe_lib/cli.py`), so it cannot drift from the code: `plausibility COMMAND --help` prints the same "
        "text. A user mistake prints one `error:` line with a `hint:` and exits with status 2.\n\n"
        f"| command | what it does |\n|---|---|\n{overview}\n\n```text\n{head}\n```\n\n{body}"
    )


def _anchor(heading: str) -> str:
    """The id mkdocs' toc extension gives a heading (lower case, punctuation dropped, spaces to dashes)."""
    slug = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", slug)


def _stage_reports(reports_dir: Path, target_dir: Path) -> list[str]:
    """Copy the published reports into the site and write ``reports.md`` linking each; returns their names."""
    names = []
    if reports_dir.is_dir():
        shutil.copytree(reports_dir, target_dir / "reports", dirs_exist_ok=True)
        names = [p.relative_to(reports_dir).with_suffix("").as_posix() for p in sorted(reports_dir.rglob("*.html"))]
    lines = [
        "# Reports",
        "",
        "The self-contained HTML reports the notebooks and commands published into `build/docs/reports/` "
        "(notebook 06 publishes its evaluation report; `plausibility evaluate --publish` adds one). Each opens on "
        "its own, offline.",
        "",
    ]
    if names:
        lines += [f"* [{name}](reports/{urllib.parse.quote(name)}.html)" for name in names]
    else:
        lines.append("No report yet: run notebook 06 (`plausibility notebooks run 06`), then `make docs`.")
    (target_dir / "reports.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return names


def _stage_benchmarks(readme: Path, target: Path) -> None:
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
    else:
        text = "# Benchmarks\n\n`benchmarks/README.md` is not in this copy of the project.\n"
    target.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def _mkdocs_log() -> Iterator[list[str]]:
    """mkdocs' warnings and errors, collected (and kept off stderr) while it builds."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage().strip())

    logger = logging.getLogger("mkdocs")
    handler = Collect(level=logging.WARNING)
    saved = os.environ.get("NO_MKDOCS_2_WARNING")
    os.environ["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about a future MkDocs 2 on every build
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        if saved is None:
            os.environ.pop("NO_MKDOCS_2_WARNING", None)


def _run_mkdocs(config_file: Path, docs_dir: Path, site_dir: Path) -> None:
    """``mkdocs build --strict`` of ``docs_dir`` into ``site_dir`` with ``config_file``; a RecipeError listing the
    warnings when it fails."""
    try:
        from mkdocs.commands.build import build
        from mkdocs.config import load_config
        from mkdocs.exceptions import MkDocsException
    except ImportError as exc:
        raise RecipeError(
            f"the site needs mkdocs ({exc.name} is not installed)",
            hint="pip install -c constraints.txt -e '.[docs]' (make venv installs it)",
        ) from exc
    with _mkdocs_log() as messages:
        try:
            config = load_config(str(config_file), docs_dir=str(docs_dir), site_dir=str(site_dir), strict=True)
            build(config)
        except MkDocsException as exc:
            found = "; ".join(messages[:5]) + (f" (and {len(messages) - 5} more)" if len(messages) > 5 else "")
            raise RecipeError(f"the site did not build: {exc}", hint=found or None) from exc


class _Refs(HTMLParser):
    """The URLs a page links to (``<a href>``), loads (``<img src>``, ``<script src>``, stylesheets ...) and the
    inline images it holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.loads: list[str] = []
        self.stderr_boxes = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.stderr_boxes += a.get("data-mime-type") == STDERR_MIME
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or "") + (a.get("as") or ""):
            self.loads.append(a["href"] or "")
        elif tag in _LOADED and a.get(_LOADED[tag]):
            self.loads.append(a[_LOADED[tag]] or "")


@dataclasses.dataclass
class SiteCheck:
    pages: int
    problems: list[str]  # broken links, missing or undecodable images, anything fetched from another host
    stderr_pages: list[str]  # pages that show stderr output, with the count

    @property
    def ok(self) -> bool:
        return not self.problems


def check_site(site_dir: Path) -> SiteCheck:
    """What mkdocs cannot see inside rendered notebooks and copied reports, checked on every built page: each relative
    link and loaded file exists, each inline image decodes as an image, nothing is loaded from another host (the site
    works offline); pages that show stderr boxes are listed."""
    site_dir = Path(site_dir)
    pages = sorted(site_dir.rglob("*.html"))
    problems: list[str] = []
    stderr_pages: list[str] = []
    for page in pages:
        rel = page.relative_to(site_dir).as_posix()
        text = page.read_text(encoding="utf-8", errors="replace")
        refs = _Refs()
        refs.feed(text)
        for url in refs.loads:
            if re.match(r"^(https?:)?//", url):
                problems.append(f"{rel}: loads {url} from another host (the site must work offline)")
            elif url.startswith("data:image/"):
                if not _decodes_as_image(url):
                    problems.append(f"{rel}: an inline image does not decode ({url[:40]}...)")
            elif not _resolves(site_dir, page, url):
                problems.append(f"{rel}: loads {url}, which is not in the site")
        for url in refs.links:
            if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", url, re.IGNORECASE) and not _resolves(site_dir, page, url):
                problems.append(f"{rel}: links to {url}, which is not in the site")
        if refs.stderr_boxes:
            stderr_pages.append(f"{rel}: {refs.stderr_boxes} stderr box(es)")
    return SiteCheck(pages=len(pages), problems=problems, stderr_pages=stderr_pages)


def _resolves(site_dir: Path, page: Path, url: str) -> bool:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    if not path:  # "?query" or "#anchor" only: the page itself
        return True
    target = (site_dir / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    target = target / "index.html" if path.endswith("/") else target
    try:
        target.resolve().relative_to(site_dir.resolve())
    except ValueError:
        return False
    return target.exists()


def _decodes_as_image(url: str) -> bool:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        return bool(payload)  # an inline SVG or URL-encoded data: present
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        return False
    if header.startswith("data:image/svg"):
        return b"<svg" in data[:2000]
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a bad image; each means "does not decode"
        return False
    return True


def build_site(cfg: SiteConfig | None = None) -> SiteResult:
    """Build the documentation site into ``build/site`` (see the module docstring): strict, then :func:`check_site`.
    A RecipeError says what broke (a link, an image, a page that did not render, a source that is missing)."""
    from recipe_lib.config import build_dir

    start = time.perf_counter()
    cfg = cfg or SiteConfig()
    sources = site_sources(cfg.sources)
    if sources is None:
        raise RecipeError(
            f"the site's sources ({MKDOCS_FILE} and {SITE_SOURCES}/) are not here",
            hint="build the site from a checkout of the repository; `plausibility docs --pages-only` exports the "
            "executed notebooks as standalone pages",
        )
    nb_dir = Path(cfg.notebooks_dir or build_dir() / "notebooks")
    reports_dir = Path(cfg.reports_dir or build_dir() / "docs" / "reports")
    site_dir = Path(cfg.site_dir or build_dir() / "site")
    staging = site_dir.with_name(site_dir.name + "-src")
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(sources / SITE_SOURCES, staging)
    rendered, missing, skipped = _stage_notebooks(nb_dir, staging / "notebooks")
    (staging / "reference").mkdir(exist_ok=True)
    (staging / "reference" / "cli.md").write_text(cli_reference(), encoding="utf-8")
    _stage_benchmarks(sources / "benchmarks" / "README.md", staging / "benchmarks.md")
    reports = _stage_reports(reports_dir, staging)
    _run_mkdocs(sources / MKDOCS_FILE, staging, site_dir)
    check = check_site(site_dir)
    if not check.ok:
        more = f" (and {len(check.problems) - 1} more)" if len(check.problems) > 1 else ""
        raise RecipeError(
            f"the site in {site_dir} is broken: {check.problems[0]}{more}",
            hint="; ".join(check.problems[1:4]) or "fix the page's source in docs/ or the notebook",
        )
    return SiteResult(
        index=site_dir / "index.html",
        pages=sorted(site_dir.rglob("*.html")),
        notebooks=rendered,
        missing=missing,
        skipped=skipped,
        reports=reports,
        stderr_pages=check.stderr_pages,
        seconds=time.perf_counter() - start,
    )


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
  var text = JSON.stringify({pages: results, broken_links: broken});
  document.getElementById("result").textContent = text;
  await fetch("/__site_check_result__", {method: "POST", body: text});
})();
</script></body></html>
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    harness = b""
    results: queue.Queue[bytes] | None = None  # where the harness posts its result

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] == "/__site_check__.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.harness)))
            self.end_headers()
            self.wfile.write(self.harness)
            return
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/__site_check_result__" or self.results is None:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()
        self.results.put(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        return


@contextlib.contextmanager
def serve_directory(root: Path, harness: bytes = b"", results: queue.Queue[bytes] | None = None) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields the base URL. ``harness`` is served as
    ``/__site_check__.html``; what it posts to ``/__site_check_result__`` lands in ``results``."""
    handler = type("SiteHandler", (_Handler,), {"harness": harness, "results": results})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _stop_chromium(proc: subprocess.Popen[Any]) -> None:
    """Stop Chromium and every process it started (it runs in a session of its own): its renderer, zygote and
    utility processes can outlive the browser by a moment and still write to the profile folder, which is then
    removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is still there
    proc.wait()


@contextlib.contextmanager
def _chromium_profile() -> Iterator[Path]:
    """A throwaway profile folder, removed once Chromium is stopped; a file that a process outside the group still
    writes there at that moment makes the removal retry, then leave what is left rather than fail the check."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    (profile / "tmp").mkdir()  # Chromium's own temporary folders (TMPDIR, see _chromium_env) go with the profile
    try:
        yield profile
    finally:
        for _ in range(5):
            shutil.rmtree(profile, ignore_errors=True)
            if not profile.exists():
                break
            time.sleep(0.2)


def _chromium_env(profile: Path) -> dict[str, str]:
    """The environment Chromium runs in: its temporary folders inside the throwaway profile, not left in /tmp; unless
    the profile's path is long, as Chromium's sockets live there and a socket's path holds at most 107 bytes."""
    if len(os.fsencode(profile)) > 48:
        return dict(os.environ)
    return {**os.environ, "TMPDIR": str(profile / "tmp")}


@contextlib.contextmanager
def _browser(url: str) -> Iterator[Path]:
    """Headless Chromium on ``url`` (a throwaway profile) while the block runs, then stopped; yields its log file."""
    if not chromium_available():
        raise RecipeError(f"Chromium not found at {CHROMIUM}", hint="apt-get install -y chromium")
    with _chromium_profile() as profile:
        log = profile / "chromium.log"
        with log.open("w") as err:
            cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}/data", url]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, env=_chromium_env(profile), start_new_session=True
            )
            try:
                yield log
            finally:
                _stop_chromium(proc)


def chromium_available() -> bool:
    return CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)


def run_chromium(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with the flags for an isolated, offline run (a throwaway profile folder)."""
    if not chromium_available():
        raise RecipeError(f"Chromium not found at {CHROMIUM}", hint="apt-get install -y chromium")
    with _chromium_profile() as profile:
        cmd = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_chromium_env(profile),
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RecipeError(f"Chromium did not finish within {timeout:.0f} s") from exc
        finally:
            _stop_chromium(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


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
    # The harness runs in real time and posts its result back; the browser is stopped once it has. (A --dump-dom run
    # under --virtual-time-budget hung in about one run of three on the site's pages with Chromium 156.)
    results: queue.Queue[bytes] = queue.Queue()
    with serve_directory(root, harness, results) as base, _browser(f"{base}/__site_check__.html") as log:
        try:
            data = json.loads(results.get(timeout=timeout))
        except queue.Empty:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise RecipeError(
                f"the browser check did not finish within {timeout:.0f} s",
                hint=" / ".join(tail) or "no output from Chromium",
            ) from None
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
