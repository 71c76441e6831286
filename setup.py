"""Build script: the package, plus the top-level ``prompts/``, ``configs/`` and ``notebooks/`` folders mapped into it
as ``recipe_lib/_data/<folder>`` so that a wheel carries them (``recipe_lib/resources.py`` finds them there). Every
other setting is in ``pyproject.toml``; the top-level folders stay the source and an editable install reads them."""

from pathlib import Path

from setuptools import find_packages, setup

# folder -> the files of it (and of its subfolders) that ship
RESOURCES = {"prompts": "*.yaml", "configs": "*.toml", "notebooks": "[0-9][0-9]_*.ipynb"}


def resource_packages() -> dict[str, tuple[str, str]]:
    """``recipe_lib._data.configs.demo`` -> (``configs/demo``, ``*.toml``) for every resource folder and subfolder."""
    found = {}
    for name, pattern in RESOURCES.items():
        for folder in [Path(name), *sorted(p for p in Path(name).rglob("*") if p.is_dir())]:
            if not any(part.startswith((".", "_")) for part in folder.parts):
                found[".".join(("recipe_lib", "_data", *folder.parts))] = (folder.as_posix(), pattern)
    return found


RESOURCE_PACKAGES = resource_packages()

setup(
    packages=find_packages(include=["recipe_lib", "recipe_lib.*"]) + list(RESOURCE_PACKAGES),
    package_dir={package: folder for package, (folder, _) in RESOURCE_PACKAGES.items()},
    package_data={package: [pattern] for package, (_, pattern) in RESOURCE_PACKAGES.items()},
)
