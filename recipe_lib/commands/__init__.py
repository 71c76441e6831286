"""CLI sub-commands, one module each (see :mod:`recipe_lib.cli`)."""
