"""``plausibility docs [--check]``: the executed recipe book as a site under build/docs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "docs",
        help="export the executed notebooks and reports as a site under build/docs",
        description="Export every executed notebook (build/notebooks/*.ipynb) to an offline HTML page and write "
        "build/docs/index.html linking the six notebooks (those not run yet are listed) and the reports in "
        "build/docs/reports/. Run the notebooks first with `plausibility notebooks run` or `plausibility demo`.",
    )
    p.add_argument("--notebooks-dir", type=Path, help="executed notebooks (default: build/notebooks)")
    p.add_argument("--docs-dir", type=Path, help="site folder (default: build/docs)")
    p.add_argument(
        "--check",
        action="store_true",
        help="open the site in headless Chromium and fail on a page that does not load, a broken image or link",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.docs import DocsConfig, browser_check, build_docs

    result = build_docs(DocsConfig(notebooks_dir=args.notebooks_dir, docs_dir=args.docs_dir))
    for page in result.exported:
        print(f"exported {page}")
    for stem in result.missing:
        print(f"not yet run: {stem}")
    print(f"{len(result.reports)} reports; index: {result.index}")
    if args.check:
        check = browser_check(result.index.parent)
        for page in check.pages:
            print(
                f"  {page.url}: {'loaded' if page.loaded else 'NOT LOADED'}, {page.images} images, "
                f"{page.broken_images} broken"
            )
        if not check.ok:
            for problem in check.problems():
                print(f"error: {problem}")
            return 1
        print("browser check: every page loaded, every image decoded, every link resolved")
    return 0
