"""``plausibility docs [--check]``: the documentation site under build/site, and the exported pages under build/docs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "docs",
        help="build the documentation site (guides, executed notebooks, CLI reference, reports) into build/site",
        description="Export every executed notebook (build/notebooks/*.ipynb) to a standalone offline page under "
        "build/docs, then build the documentation site into build/site: the guides of docs/, the seven notebooks "
        "with their outputs (a placeholder for one not run yet), the CLI reference generated from these parsers, "
        "the benchmarks and the reports of build/docs/reports. The build is strict: a broken link, a missing image "
        "or a page that does not render fails it. A file that is not a readable notebook is skipped with its "
        "reason. Run the notebooks first with `plausibility notebooks run` or `plausibility demo`.",
    )
    p.add_argument("--notebooks-dir", type=Path, help="executed notebooks (default: build/notebooks)")
    p.add_argument("--docs-dir", type=Path, help="exported pages and reports (default: build/docs)")
    p.add_argument("--site-dir", type=Path, help="the site (default: build/site)")
    p.add_argument(
        "--pages-only",
        action="store_true",
        help="export the standalone pages only (an installed package has no site sources)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="open every page in headless Chromium and fail on a page that does not load, a broken image or link",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recipe_lib.docs import DocsConfig, SiteConfig, browser_check, build_docs, build_site, site_sources

    exports = build_docs(DocsConfig(notebooks_dir=args.notebooks_dir, docs_dir=args.docs_dir))
    for page in exports.exported:
        print(f"exported {page}")
    for path, reason in exports.skipped:
        print(f"  skipped {path.name}: {reason}")
    for stem in exports.missing:
        print(f"not yet run: {stem}")
    print(
        f"{len(exports.exported)} exported, {len(exports.skipped)} skipped, {len(exports.reports)} reports; "
        f"pages: {exports.index}"
    )
    root = exports.index.parent
    if not args.pages_only:
        if site_sources() is None:
            print("no site sources here (mkdocs.yml and docs/ come with a checkout): standalone pages only")
        else:
            reports = (args.docs_dir / "reports") if args.docs_dir else None
            site = build_site(SiteConfig(notebooks_dir=args.notebooks_dir, reports_dir=reports, site_dir=args.site_dir))
            for stem in site.missing:
                print(f"  placeholder page for {stem} (not run yet)")
            for line in site.stderr_pages:
                print(f"warning: stderr output shown on {line}")
            print(
                f"site: {len(site.pages)} pages ({len(site.notebooks)} notebooks, {len(site.reports)} reports) "
                f"in {site.seconds:.0f} s, strict build and link check passed"
            )
            print(f"site: {site.index}")
            root = site.index.parent
    if args.check:
        check = browser_check(root)
        broken = [p for p in check.pages if not p.loaded or p.broken_images]
        print(f"  browser: {len(check.pages)} pages opened, {sum(p.images for p in check.pages)} images")
        for page in broken:
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
