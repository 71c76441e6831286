"""The output folder of one training run, and the settings that identify the run.

A run folder (``train.output_dir``) holds::

    checkpoints/step_000050/   model + processor (``save_pretrained``; loads with ``load_critic``) and
                               ``trainer_state.pt`` (optimizer, scheduler, RNG states, step) + ``trainer_state.json``;
                               under LoRA the adapter (PEFT's format) instead of the model
    checkpoints/final/         the model after the last step (same layout)
    merged/                    LoRA with ``local.lora.merge_final``: the model with the adapter merged in
    run.json                   the resolved settings; a rerun with other settings refuses to mix the two runs
    history.jsonl              one line per optimizer step; eval.jsonl: one line per evaluation
    tensorboard/               scalars for TensorBoard
    skipped.jsonl              samples left out (unreadable clip, malformed conversation) and why
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

from recipe_lib.config import to_dict
from recipe_lib.errors import ConfigError
from recipe_lib.io import append_jsonl, atomic_write_json, atomic_write_jsonl, read_jsonl

CHECKPOINTS = "checkpoints"
FINAL = "final"
MERGED = "merged"
STATE_FILE = "trainer_state.pt"
STATE_JSON = "trainer_state.json"
HISTORY = "history.jsonl"
EVALS = "eval.jsonl"
SKIPPED = "skipped.jsonl"
_STEP_RE = re.compile(r"^step_(\d+)$")

# Settings that may change between a run and its resumption without mixing two different runs.
_RESUMABLE_KEYS = (
    "local.max_steps",
    "local.log_every",
    "local.tensorboard_dir",
    "local.num_workers",
    "local.lora.merge_final",
    "validation",
)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out.extend(_diff_keys(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_settings(cfg: Any, data: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings recorded in ``run.json``: the whole config as plain data plus digests of the datasets' contents
    (so relabelled data in the same folder counts as a different run)."""
    settings = json.loads(json.dumps(to_dict(cfg), default=str))
    if data:
        settings["data"] = dict(data)
    return settings


@dataclasses.dataclass
class RunFolder:
    """The output folder of one training run (see the module docstring for its layout)."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def final(self) -> Path:
        return self.checkpoints / FINAL

    @property
    def merged(self) -> Path:
        return self.root / MERGED

    def claim(self, settings: dict[str, Any], restart: bool | str = False) -> bool:
        """Record the run's settings; a folder holding a run with other settings is an error, or is cleared when
        ``restart`` is True or ``"changed"``. Returns True when an earlier run was discarded."""
        marker = self.root / "run.json"
        discarded = False
        if restart is True:
            discarded = marker.exists()
            self.clear()
        elif marker.exists():
            old = json.loads(marker.read_text())
            diff = [k for k in _diff_keys(old, settings) if not k.startswith(_RESUMABLE_KEYS)]
            if diff and restart == "changed":
                self.clear()
                discarded = True
            elif diff:
                raise ConfigError(
                    f"{self.root} holds a run with other settings (differs in: {', '.join(diff[:6])})",
                    hint="choose another train.output_dir, or restart it (--restart / restart=True) to discard it",
                )
        elif self.checkpoints.is_dir() and any(self.checkpoints.iterdir()):
            raise ConfigError(
                f"{self.checkpoints} holds checkpoints but no run.json, so they cannot be resumed safely",
                hint="point train.output_dir at a new folder, or restart it (--restart / restart=True)",
            )
        atomic_write_json(marker, settings)
        return discarded

    def clear(self) -> None:
        """Remove what a run writes (and nothing else) from the folder."""
        for name in (CHECKPOINTS, MERGED, "tensorboard"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in (HISTORY, EVALS, SKIPPED, "samples.jsonl", "run.json"):
            (self.root / name).unlink(missing_ok=True)

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete step checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.iterdir():
            m = _STEP_RE.match(p.name)
            if m and (p / STATE_JSON).is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def finished(self, total_steps: int | None = None) -> bool:
        """Whether ``final/`` exists (and, given ``total_steps``, holds at least that many steps)."""
        if not (self.final / STATE_JSON).is_file():
            return False
        return total_steps is None or self.final_step() >= total_steps

    def final_step(self) -> int:
        return int(json.loads((self.final / STATE_JSON).read_text())["step"])

    def latest(self) -> tuple[int, Path] | None:
        """The newest checkpoint to resume from: ``final`` when the run finished, else the newest step."""
        steps = self.step_checkpoints()
        if self.finished() and (not steps or self.final_step() >= steps[-1][0]):
            return self.final_step(), self.final
        return steps[-1] if steps else None

    # -- logs ---------------------------------------------------------------------------------------------------------

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(self.root / name))

    def truncate_logs(self, step: int) -> None:
        """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
        for name in (HISTORY, EVALS):
            path = self.root / name
            if path.exists():
                atomic_write_jsonl(path, [r for r in self.read_jsonl(name) if r.get("step", 0) <= step])

    def append(self, name: str, row: dict[str, Any]) -> None:
        append_jsonl(self.root / name, [row])

    def write_skipped(self, skipped: list[dict[str, Any]]) -> None:
        atomic_write_jsonl(self.root / SKIPPED, skipped)
