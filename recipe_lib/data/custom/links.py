"""Link rules: which local file a sheet's link names (a regex or a template), kept inside the videos folder.

Part of :mod:`recipe_lib.data.custom` (see its docstring).
"""

from __future__ import annotations

import os
import re
import string
import urllib.parse
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from recipe_lib.errors import ConfigError

TEMPLATE_FIELDS = ("name", "stem", "suffix", "ext", "path", "parent", "host", "row")

# --------------------------------------------------------------------------------------------------------------------
# link -> file


class LinkRule:
    """Turns a link into a file name relative to the videos folder (basename, regex or template; see module doc)."""

    def __init__(self, pattern: str | None = None, template: str | None = None) -> None:
        if pattern and template:
            raise ConfigError("give either a link pattern or a link template, not both")
        self.pattern = pattern
        self.template = template
        self._regex: re.Pattern[str] | None = None
        if pattern:
            try:
                self._regex = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"link pattern {pattern!r} is not a valid regular expression: {exc}") from exc
            if "name" not in self._regex.groupindex:
                raise ConfigError(
                    f"link pattern {pattern!r} has no named group 'name'",
                    hint=r"mark the file name part with (?P<name>...), e.g. 'renders/(?P<name>[^/?]+)'",
                )
        if template:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except ValueError as exc:
                raise ConfigError(f"link template {template!r} is malformed: {exc}") from exc
            unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
            if unknown or not fields:
                raise ConfigError(
                    f"link template {template!r} uses unknown field(s) {unknown}"
                    if unknown
                    else f"link template {template!r} uses no field",
                    hint="fields: " + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS),
                )

    def describe(self) -> str:
        if self.pattern:
            return f"regex {self.pattern!r} (group 'name')"
        if self.template:
            return f"template {self.template!r}"
        return "file name of the link's URL path (URL-decoded)"

    @staticmethod
    def parts(link: str, row: int = 0) -> dict[str, Any]:
        """The template fields of a link."""
        split = urllib.parse.urlsplit(link)
        if len(split.scheme) > 1:
            # The file name is the last segment of the URL path, decoded after splitting: an encoded '/' (%2F)
            # stays part of the name (and is then refused as a path), it never silently selects another file.
            segments = split.path.split("/")
            name = urllib.parse.unquote(segments[-1])
            path = urllib.parse.unquote(split.path).lstrip("/")
            host = split.netloc
        else:  # a plain path (possibly Windows style), used as written
            path = link.replace("\\", "/").lstrip("/")
            name, host = PurePosixPath(path).name, ""
        p = PurePosixPath(path)
        stem, suffix = (name.rsplit(".", 1)[0], "." + name.rsplit(".", 1)[1]) if "." in name.strip(".") else (name, "")
        return {
            "name": name,
            "stem": stem,
            "suffix": suffix,
            "ext": suffix.lstrip("."),
            "path": path,
            "parent": "" if str(p.parent) == "." else str(p.parent),
            "host": host,
            "row": row,
        }

    def name_for(self, link: str, row: int = 0) -> str:
        """The relative file name for ``link``; raises :class:`ValueError` with a reason when there is none."""
        if self._regex is not None:
            m = self._regex.search(link)
            if not m or not m.group("name"):
                raise ValueError(f"link does not match the pattern {self.pattern!r}")
            return urllib.parse.unquote(m.group("name"))
        parts = self.parts(link, row)
        if self.template:
            return self.template.format(**parts)
        if not parts["name"]:
            raise ValueError("the link has no file name at the end of its path")
        return parts["name"]


def resolve_inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` if it stays inside ``folder`` (symlinks followed); raises :class:`PermissionError`
    naming why not. The file need not exist."""
    rel = relative.replace("\\", "/")
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(relative).drive or rel.startswith("~"):
        raise PermissionError(f"'{relative}' is an absolute path; only names inside the videos folder are used")
    if ".." in PurePosixPath(rel).parts:
        raise PermissionError(f"'{relative}' climbs out of the videos folder with '..'")
    root = Path(os.path.realpath(folder))
    target = folder / rel
    real = Path(os.path.realpath(target))
    if not real.is_relative_to(root):
        raise PermissionError(f"'{relative}' is a symlink to {real}, outside the videos folder")
    return target
