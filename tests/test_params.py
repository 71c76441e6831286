"""``--set`` / ``-p`` values: plain YAML scalars, with numbers in exponent form read as numbers."""

from __future__ import annotations

import pytest

from recipe_lib.commands._common import parse_params
from recipe_lib.errors import ConfigError


def test_values_keep_their_types() -> None:
    got = parse_params(["lr=5e-4", "steps=20", "on=true", "fps=[4, 16]", "name=run-1", "x=1.5E+3", "inf=inf"])
    assert got == {"lr": 5e-4, "steps": 20, "on": True, "fps": [4, 16], "name": "run-1", "x": 1500.0, "inf": "inf"}
    assert isinstance(got["lr"], float) and isinstance(got["steps"], int)


def test_bad_pairs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_params(["lr"])
    with pytest.raises(ConfigError, match="not a plain YAML value"):
        parse_params(["x=!!python/object:os.system ls"])
