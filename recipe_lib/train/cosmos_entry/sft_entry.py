"""cosmos-rl SFT entry: ``cosmos-rl --config run.toml recipe_lib/train/cosmos_entry/sft_entry.py``.

cosmos-rl runs this file as a script in the controller and in every worker; it serves the conversation dataset named
by ``[custom.dataset]``.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository importable (launch() also sets PYTHONPATH).
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from recipe_lib.train.cosmos_entry.common import main  # noqa: E402

if __name__ == "__main__":
    main("sft")
