"""Where the recipe's own files live: prompts, training configs, notebooks, and the default build folder.

The top-level ``prompts/``, ``configs/`` and ``notebooks/`` folders of the repository are the source. A wheel ships
copies of them inside the package as ``recipe_lib/_data/<folder>`` (``setup.py`` maps them in at build time), so an
installed ``plausibility`` finds its default prompt without a checkout. A source checkout or an editable install keeps
reading the top-level folders, so an edit there takes effect at once.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The folder that holds the ``recipe_lib`` package: the repository root in a checkout, site-packages when installed.
REPO_ROOT = PACKAGE_DIR.parent
PACKAGED_DATA = PACKAGE_DIR / "_data"
RESOURCE_FOLDERS = ("prompts", "configs", "notebooks")


def is_source_checkout(root: Path = REPO_ROOT) -> bool:
    """Whether ``recipe_lib`` is imported from a checkout of the repository (its ``pyproject.toml`` beside it)."""
    return (root / "pyproject.toml").is_file() and all((root / name).is_dir() for name in RESOURCE_FOLDERS)


SOURCE_CHECKOUT = is_source_checkout()


def resource_dir(name: str) -> Path:
    """The folder holding the recipe's ``prompts``, ``configs`` or ``notebooks``: the top-level one in a checkout,
    the copy inside the package otherwise."""
    if name not in RESOURCE_FOLDERS:
        raise ValueError(f"unknown resource folder {name!r}: one of {', '.join(RESOURCE_FOLDERS)}")
    return REPO_ROOT / name if SOURCE_CHECKOUT else PACKAGED_DATA / name


def project_dir() -> Path:
    """The folder runs work in: the repository root in a checkout, the working folder for an installed package (never
    a folder inside site-packages)."""
    return REPO_ROOT if SOURCE_CHECKOUT else Path.cwd()


def default_build_dir() -> Path:
    """``<repo>/build`` in a checkout, ``./build`` for an installed package."""
    return project_dir() / "build"


PROMPTS_DIR = resource_dir("prompts")
CONFIGS_DIR = resource_dir("configs")
NOTEBOOKS_DIR = resource_dir("notebooks")
