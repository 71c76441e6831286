"""The violation table, the scenes, the physical-commonsense score rule, and the generator's config and result.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recipe_lib.data.videophy2 import VIDEOPHY2_COLUMNS
from recipe_lib.errors import ConfigError, RecipeError
from recipe_lib.io import atomic_write_text

SCENES: tuple[str, ...] = ("free_fall", "projectile", "bounce", "slide_friction", "collision", "wall_rebound")
CATEGORIES: tuple[str, ...] = ("gravity", "mass", "energy", "momentum", "causality", "spatial", "permanence")
MIN_FRAMES = 8
MIN_SIZE = 32
MIN_VISIBLE_FRAMES = 3
MODEL_NAME = "synthetic"
# VideoPhy-2's schema (without its free-form metadata_rules) plus what only known-truth clips can say.
RECORD_COLUMNS: tuple[str, ...] = (
    *(c for c in VIDEOPHY2_COLUMNS if c != "metadata_rules"),
    "scene",
    "violation",
    "violation_category",
    "onset_frame",
    "seed",
    "sa_caption",
    "sa_caption_label",
)
# The semantic-adherence probe (task sa on the demo): a caption that matches the clip (its own) or describes another
# scene, and what a faithful judge would answer (5 / 1). Drawn after rendering, from its own random stream.
SA_CAPTION_COLUMNS: tuple[str, ...] = ("sa_caption", "sa_caption_label")
SA_MATCH, SA_MISMATCH = 5, 1
_INT_COLUMNS = ("sa", "pc", "joint", "onset_frame", "seed", "sa_caption_label")
_BOOL_COLUMNS = ("is_hard",)
_ID_RE = re.compile(r"^s\d{4,}_[a-z_]+\.mp4$")


# --------------------------------------------------------------------------------------------------------------------
# Violations
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViolationSpec:
    """One kind of physics violation.

    ``category`` is the recipe's physics challenge it belongs to, ``severity`` 1 (subtle) to 3 (blatant) feeds the
    ``pc`` rule, ``description`` says what goes wrong (``{obj}`` is the object), ``rule`` is the physical rule the
    violation breaks, phrased as a rule that a plausible clip follows, and ``scenes`` lists where it can happen.
    """

    name: str
    category: str
    severity: int
    description: str
    rule: str
    scenes: tuple[str, ...]


VIOLATIONS: dict[str, ViolationSpec] = {
    spec.name: spec
    for spec in (
        ViolationSpec(
            "hover",
            "gravity",
            3,
            "{Obj} stops in mid-air and stays there with nothing holding it up.",
            "{Obj} keeps falling under gravity until something supports it.",
            ("free_fall", "projectile", "bounce"),
        ),
        ViolationSpec(
            "upward_acceleration",
            "gravity",
            3,
            "{Obj} starts accelerating upward on its own, as if it were falling up.",
            "{Obj} is pulled downward by gravity and never accelerates upward on its own.",
            ("free_fall", "projectile", "bounce", "slide_friction"),
        ),
        ViolationSpec(
            "size_change",
            "mass",
            1,
            "{Obj} grows or shrinks while it moves although nothing is added or removed.",
            "{Obj} keeps the same size throughout the video.",
            SCENES,
        ),
        ViolationSpec(
            "energy_gain",
            "energy",
            2,
            "{Obj} gains speed or height from nowhere, ending up with more energy than it started with.",
            "{Obj} never gains energy without something supplying it.",
            ("bounce", "slide_friction", "collision", "wall_rebound"),
        ),
        ViolationSpec(
            "no_momentum_transfer",
            "momentum",
            3,
            "The rolling ball meets the resting ball without pushing it: it passes through and the other ball "
            "stays put.",
            "The rolling ball pushes the resting ball when they meet instead of passing through it.",
            ("collision",),
        ),
        ViolationSpec(
            "sudden_stop",
            "momentum",
            2,
            "{Obj} stops moving abruptly without hitting anything or being slowed down.",
            "{Obj} keeps moving until a force such as friction or a collision slows it down.",
            ("projectile", "slide_friction", "collision", "wall_rebound"),
        ),
        ViolationSpec(
            "effect_before_cause",
            "causality",
            1,
            "The resting ball starts to move before the rolling ball reaches it.",
            "The resting ball starts to move only after the rolling ball touches it.",
            ("collision",),
        ),
        ViolationSpec(
            "penetration",
            "spatial",
            2,
            "{Obj} passes into a solid surface instead of being stopped by it.",
            "{Obj} cannot pass into or through a solid surface.",
            ("free_fall", "projectile", "bounce", "slide_friction", "wall_rebound"),
        ),
        ViolationSpec(
            "vanish",
            "permanence",
            3,
            "{Obj} disappears from the scene although nothing hides it.",
            "{Obj} stays visible for the whole video and does not disappear.",
            SCENES,
        ),
        ViolationSpec(
            "teleport",
            "permanence",
            3,
            "{Obj} jumps instantly from one place to another.",
            "{Obj} moves continuously and does not jump from one place to another.",
            SCENES,
        ),
    )
}

# Scene-specific wording where the generic sentence would be vague.
_RULE_OVERRIDES: dict[tuple[str, str], tuple[str, str]] = {
    ("bounce", "energy_gain"): (
        "The ball bounces higher than the height it was dropped from.",
        "Each bounce of the ball is no higher than the height it fell from.",
    ),
    ("slide_friction", "energy_gain"): (
        "The box speeds up by itself while friction should be slowing it down.",
        "The box slows down under friction and never speeds up without a push.",
    ),
    ("collision", "energy_gain"): (
        "After the collision the struck ball flies off faster than the energy of the incoming ball allows.",
        "After the collision the balls move no faster than the energy of the incoming ball allows.",
    ),
    ("wall_rebound", "energy_gain"): (
        "The ball comes back from the wall faster than it arrived.",
        "The ball rebounds from the wall no faster than it arrived.",
    ),
    ("wall_rebound", "penetration"): (
        "The ball passes through the solid wall.",
        "The ball cannot pass through the solid wall.",
    ),
    ("collision", "sudden_stop"): (
        "The rolling ball stops abruptly before reaching the other ball, with nothing slowing it down.",
        "The rolling ball keeps moving until a force such as friction or a collision slows it down.",
    ),
}

_SCENE_OBJECT = {
    "free_fall": "the ball",
    "projectile": "the ball",
    "bounce": "the ball",
    "slide_friction": "the box",
    "collision": "each ball",
    "wall_rebound": "the ball",
}
_SCENE_ACTION = {
    "free_fall": "ball falling",
    "projectile": "projectile motion",
    "bounce": "ball bouncing",
    "slide_friction": "box sliding with friction",
    "collision": "ball collision",
    "wall_rebound": "ball rebounding from a wall",
}


def violations_for(scene: str) -> tuple[str, ...]:
    """Names of the violations that apply to ``scene`` (in ``VIOLATIONS`` order)."""
    _check_scene(scene)
    return tuple(name for name, spec in VIOLATIONS.items() if scene in spec.scenes)


def _fill(text: str, scene: str) -> str:
    obj = _SCENE_OBJECT[scene]
    return text.replace("{Obj}", obj[0].upper() + obj[1:]).replace("{obj}", obj)


def _rule(scene: str, violation: str) -> str:
    if (scene, violation) in _RULE_OVERRIDES:
        return _RULE_OVERRIDES[(scene, violation)][1]
    return _fill(VIOLATIONS[violation].rule, scene)


def _description(scene: str, violation: str) -> str:
    if (scene, violation) in _RULE_OVERRIDES:
        return _RULE_OVERRIDES[(scene, violation)][0]
    return _fill(VIOLATIONS[violation].description, scene)


def scene_rules(scene: str) -> list[str]:
    """The physical rules a plausible clip of ``scene`` follows (one per applicable violation, deduplicated)."""
    rules: list[str] = []
    for name in violations_for(scene):
        sentence = _rule(scene, name)
        if sentence not in rules:
            rules.append(sentence)
    return rules


def pc_score(violation: str, onset_frame: int | None, frames: int) -> int:
    """The physical-commonsense score of a clip (see the module docstring for the rule)."""
    if violation == "none":
        return 5
    if violation not in VIOLATIONS:
        raise RecipeError(f"unknown violation {violation!r}; valid violations: none, {', '.join(VIOLATIONS)}")
    severity = VIOLATIONS[violation].severity
    if onset_frame is None or onset_frame < 0:
        raise RecipeError(f"violation '{violation}' needs an onset frame")
    early = onset_frame <= frames / 2
    return (4 if early else 5) - severity


def is_hard(violation: str, onset_frame: int | None, frames: int) -> bool:
    """Subtle (severity 1) violations and late onsets are the hard subset."""
    if violation not in VIOLATIONS:
        return False
    late = onset_frame is not None and onset_frame > frames / 2
    return VIOLATIONS[violation].severity == 1 or late


# --------------------------------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    """What to render. ``scenes``/``violations`` of None mean all; ``workers`` 0 means one per CPU core."""

    n: int = field(default=60, metadata={"help": "number of clips"})
    out_dir: Path = field(default=Path("build/data/synthetic"), metadata={"help": "output folder"})
    seed: int = field(default=0, metadata={"help": "random seed; the same seed gives identical files"})
    style: Literal["varied", "contrast"] = field(
        default="varied",
        metadata={"help": "varied colours and sizes, or contrast (black background, grey floor, white objects)"},
    )
    width: int = field(default=112, metadata={"help": "frame width in pixels (even, >= 32)"})
    height: int = field(default=112, metadata={"help": "frame height in pixels (even, >= 32)"})
    frames: int = field(default=16, metadata={"help": "frames per clip (>= 8)"})
    fps: int = field(default=8, metadata={"help": "frames per second"})
    plausible_fraction: float = field(default=0.5, metadata={"help": "share of clips without a violation (0-1)"})
    scenes: list[str] | None = field(
        default=None, metadata={"help": f"comma list of scenes (default all: {', '.join(SCENES)})"}
    )
    violations: list[str] | None = field(
        default=None, metadata={"help": "comma list of violations (default: all that apply)"}
    )
    workers: int = field(default=0, metadata={"help": "worker processes (0 = one per CPU core)"})

    def validate(self) -> None:
        """Raise :class:`~recipe_lib.errors.ConfigError` naming the first bad value."""
        _check_int("n", self.n, 1)
        _check_int("seed", self.seed, 0)
        _check_int("workers", self.workers, 0)
        _check_int("frames", self.frames, MIN_FRAMES, 10_000)
        _check_int("fps", self.fps, 1, 1000)
        for name in ("width", "height"):
            value = getattr(self, name)
            _check_int(name, value, MIN_SIZE, 8192)
            if value % 2:
                raise ConfigError(f"{name} must be even (H.264 4:2:0 needs even sizes), got {value}")
        if self.style not in ("varied", "contrast"):
            raise ConfigError(f"unknown style {self.style!r}", hint="use 'varied' or 'contrast'")
        frac = self.plausible_fraction
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0.0 <= float(frac) <= 1.0:
            raise ConfigError(f"plausible_fraction must be a number between 0 and 1, got {frac!r}")
        if not isinstance(self.out_dir, str | Path) or not str(self.out_dir):
            raise ConfigError(f"out_dir must be a folder path, got {self.out_dir!r}")
        scenes = self.selected_scenes()
        violations = self.selected_violations()
        if float(frac) < 1.0 and not _pairs(scenes, violations):
            raise ConfigError(
                f"none of the violations {', '.join(violations)} applies to the scenes {', '.join(scenes)}",
                hint="; ".join(f"{v}: {', '.join(VIOLATIONS[v].scenes)}" for v in violations)
                + " (or set plausible_fraction to 1)",
            )

    def selected_scenes(self) -> tuple[str, ...]:
        return _select("scene", self.scenes, SCENES)

    def selected_violations(self) -> tuple[str, ...]:
        return _select("violation", self.violations, tuple(VIOLATIONS))


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def _select(kind: str, chosen: Sequence[str] | None, valid: tuple[str, ...]) -> tuple[str, ...]:
    if chosen is None:
        return valid
    if isinstance(chosen, str) or not isinstance(chosen, Sequence):
        raise ConfigError(f"{kind}s must be a list of names, got {chosen!r}", hint=f"valid {kind}s: {', '.join(valid)}")
    if not chosen:
        raise ConfigError(f"the list of {kind}s is empty", hint=f"leave it unset for all; valid: {', '.join(valid)}")
    out: list[str] = []
    for name in chosen:
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            raise ConfigError(
                f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}",
                hint=f"did you mean '{close[0]}'?" if close else None,
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def _pairs(scenes: Sequence[str], violations: Sequence[str]) -> list[tuple[str, str]]:
    return [(s, v) for v in violations for s in scenes if s in VIOLATIONS[v].scenes]


def _check_scene(scene: str) -> None:
    if scene not in SCENES:
        raise RecipeError(f"unknown scene {scene!r}; valid scenes: {', '.join(SCENES)}")


@dataclass
class SynthResult:
    """Where a synthetic set was written and what it holds."""

    out_dir: Path
    dataset_dir: Path
    manifest_csv: Path
    n_clips: int
    counts_by_violation: dict[str, int]
    counts_by_pc: dict[int, int]
    codec: str = ""
    elapsed_s: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write a JSON summary (atomically) and return its path."""
        path = Path(path)
        data = {
            "out_dir": str(self.out_dir),
            "dataset_dir": str(self.dataset_dir),
            "manifest_csv": str(self.manifest_csv),
            "n_clips": self.n_clips,
            "counts_by_violation": self.counts_by_violation,
            "counts_by_pc": {str(k): v for k, v in self.counts_by_pc.items()},
            "codec": self.codec,
            "elapsed_s": round(self.elapsed_s, 3),
            "config": self.config,
        }
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return path
