"""What an executed notebook and its exported page carry on stderr (tests assert both are clean)."""

from __future__ import annotations

from pathlib import Path

import nbformat

STDERR_MIME = "application/vnd.jupyter.stderr"
STDERR_BOX = f'data-mime-type="{STDERR_MIME}"'  # how nbconvert marks a stderr stream's box in an exported page


def stderr_outputs(path: Path) -> list[str]:
    """``cell N: first line`` for every stderr stream in an executed notebook (errors are raised by the runner)."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                first = (output.get("text") or "").strip().splitlines()[:1]
                found.append(f"{path.name} cell {index}: {first[0] if first else '(blank)'}")
    return found


def html_stderr_boxes(path: Path) -> int:
    """How many stderr boxes an exported notebook page shows."""
    return path.read_text(encoding="utf-8", errors="replace").count(STDERR_BOX)


def unclean_since(root: Path, since: float) -> list[str]:
    """Stderr found in every executed notebook (``*/notebooks/*.ipynb``) and exported page (``*/docs/*.html``)
    written under ``root``'s build folders at or after ``since``."""
    problems = []
    for nb in sorted(root.glob("*/notebooks/*.ipynb")):
        if nb.stat().st_mtime >= since:
            problems += stderr_outputs(nb)
    for page in sorted(root.glob("*/docs/*.html")):
        if page.stat().st_mtime >= since and html_stderr_boxes(page):
            problems.append(f"{page.name}: {html_stderr_boxes(page)} stderr box(es) in the exported page")
    return problems
