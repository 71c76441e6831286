"""The documentation site under ``build/docs``: an index page linking the executed notebooks and the HTML reports."""

from __future__ import annotations

import os
from pathlib import Path

from jinja2 import Environment, select_autoescape

_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plausibility-recipes — executed recipe book</title>
<style>body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto;padding:0 1em;color:#222}
li{margin:.3em 0}small{color:#666}</style></head>
<body><h1>plausibility-recipes</h1>
<p>The recipe book as executed on this machine: each notebook with its outputs, and the reports it wrote.</p>
<h2>Notebooks</h2><ol>{% for name, href in notebooks %}<li><a href="{{ href }}">{{ name }}</a></li>{% endfor %}</ol>
{% if reports %}<h2>Reports</h2><ul>{% for name, href in reports %}<li><a href="{{ href }}">{{ name }}</a></li>
{% endfor %}</ul>{% endif %}
</body></html>
"""


def write_docs_index(docs_dir: Path) -> Path:
    """Write ``index.html`` linking every ``NN_*.html`` notebook page and every ``reports/**.html`` in ``docs_dir``."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    notebooks = [(p.stem.replace("_", " "), p.name) for p in sorted(docs_dir.glob("[0-9][0-9]_*.html"))]
    reports = [
        (str(p.relative_to(docs_dir).with_suffix("")), os.path.relpath(p, docs_dir))
        for p in sorted((docs_dir / "reports").rglob("*.html"))
    ]
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(_INDEX).render(notebooks=notebooks, reports=reports)
    index = docs_dir / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
