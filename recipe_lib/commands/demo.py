"""``plausibility demo``: the whole recipe on the embedded defaults (tiny critic, synthetic clips, CPU)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the demo critic and data, run every notebook, build the documentation site")
    p.add_argument("names", nargs="*", help="run only these notebooks (default: all)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from recipe_lib.config import build_dir
    from recipe_lib.demo import ensure_demo_data
    from recipe_lib.docs import build_site, site_sources
    from recipe_lib.models.tiny import demo_model_dir, ensure_demo_critic
    from recipe_lib.notebooks import list_notebooks, run_notebook, write_index

    start = time.perf_counter()
    print(f"demo critic: {ensure_demo_critic(demo_model_dir())}")
    data = ensure_demo_data()
    print(f"demo clips: {data.n_train} train, {data.n_eval} eval under {data.root}")
    for name in args.names or [nb.stem for nb in list_notebooks()]:
        r = run_notebook(name, {"profile": "demo"}, timeout=args.timeout)
        print(f"{r.name}: {r.seconds:.0f} s -> {r.html}")
    print(f"pages: {write_index()}")
    if site_sources() is not None:  # a checkout: the documentation site, from the notebooks just executed
        site = build_site()
        print(f"site: {site.index} ({len(site.pages)} pages, strict build and link check passed, {site.seconds:.0f} s)")
    print(f"done in {time.perf_counter() - start:.0f} s; everything is under {build_dir()}")
    return 0
