"""``plausibility notebooks run|list``: execute the recipe's notebooks headless (papermill)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notebooks", help="run the numbered notebooks headless and export them as HTML")
    nsub = p.add_subparsers(dest="notebooks_command", metavar="ACTION")
    run_p = nsub.add_parser("run", help="execute notebooks with papermill into build/notebooks and build/docs")
    run_p.add_argument("names", nargs="*", help="notebooks to run, e.g. 01 02_zero_shot (default: all)")
    run_p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter for every notebook run (repeatable), e.g. -p profile=demo",
    )
    run_p.add_argument("--timeout", type=int, default=1800, help="seconds a cell may run")
    run_p.add_argument("--no-html", action="store_true", help="skip the HTML export")
    run_p.set_defaults(func=run)
    list_p = nsub.add_parser("list", help="list the notebooks")
    list_p.set_defaults(func=list_notebooks)
    kernel_p = nsub.add_parser("kernel", help="register the project's Jupyter kernel (plausibility-recipes)")
    kernel_p.set_defaults(func=kernel)
    lab_p = nsub.add_parser("lab", help="JupyterLab on the notebooks, on 127.0.0.1 (needs the lab extra)")
    lab_p.add_argument("--port", type=int, default=None, help="port (default: Jupyter's, 8888 or the next free one)")
    lab_p.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")
    lab_p.set_defaults(func=lab)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def list_notebooks(args: argparse.Namespace) -> int:
    from recipe_lib.notebooks import list_notebooks as nbs

    for nb in nbs():
        print(nb.stem)
    return 0


def run(args: argparse.Namespace) -> int:
    from recipe_lib.commands._common import parse_params
    from recipe_lib.notebooks import check_parameters, run_notebook, write_index
    from recipe_lib.notebooks import list_notebooks as nbs

    names = args.names or [nb.stem for nb in nbs()]
    params = parse_params(args.param)
    for name in names:  # every name checked before the first notebook runs
        check_parameters(name, params)
    for name in names:
        r = run_notebook(name, params, timeout=args.timeout, html=not args.no_html)
        print(f"{r.name}: {r.seconds:.0f} s -> {r.output}" + (f", {r.html}" if r.html else ""))
        if r.metrics is not None:
            print(f"  metrics: {r.metrics}")
    if not args.no_html:
        print(f"index: {write_index()}")
    return 0


def kernel(args: argparse.Namespace) -> int:
    from recipe_lib.notebooks import ensure_kernel, kernel_spec_path

    name = ensure_kernel()
    print(f"kernel {name}: {kernel_spec_path()}")
    return 0


def lab(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    from recipe_lib.errors import RecipeError
    from recipe_lib.notebooks import jupyter_command

    if importlib.util.find_spec("jupyterlab") is None:
        hint = "run 'make lab', or pip install 'plausibility-recipes[lab]'"
        raise RecipeError("JupyterLab is not installed", hint=hint)
    command = jupyter_command("jupyterlab", port=args.port, browser=not args.no_browser)
    os.execv(command[0], command)  # JupyterLab takes over this process (Ctrl-C stops it)
    return 0  # pragma: no cover - execv does not return
