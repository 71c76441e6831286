"""Known-truth synthetic physics clips: simple 2-D scenes, each plausible or with exactly one physics violation.

Every clip is a static side view of a floor (and sometimes a wall) with one or two objects. A small simulator
(semi-implicit Euler, many sub-steps per frame, gravity, floor and wall contacts with restitution, floor friction and
ball-ball impulses) integrates the scene; a violation is one change to that simulation (an event at a frame, or one
altered contact rule), so everything before the violation is exactly what correct physics would show.

Scenes and the violations that apply to them (``x`` = applies; the same table is ``VIOLATIONS[name].scenes``)::

    violation (category)              free_fall projectile bounce slide_friction collision wall_rebound
    hover (gravity)                       x         x        x
    upward_acceleration (gravity)         x         x        x          x
    size_change (mass)                    x         x        x          x            x          x
    energy_gain (energy)                                     x          x            x          x
    no_momentum_transfer (momentum)                                                  x
    sudden_stop (momentum)                          x                   x            x          x
    effect_before_cause (causality)                                                  x
    penetration (spatial)                 x         x        x          x                       x
    vanish (permanence)                   x         x        x          x            x          x
    teleport (permanence)                 x         x        x          x            x          x

Onset
    ``onset_frame`` is the first frame in which the clip departs from its plausible twin (same scene, same
    parameters, no violation): an object's position, size or visibility differs. Frames before it are exactly what
    correct physics shows (pixel for pixel). Every violation clip shows at least ``MIN_VISIBLE_FRAMES`` frames from
    the onset on, and its deviation from correct physics reaches at least 8% of the frame's smaller side (or an object
    disappears), so the violation is clearly visible. Some violations get extra checks (an object that falls up ends
    clearly higher than where it turned; a struck ball moves while a clear gap still separates it from the striker).
    Plausible clips have ``onset_frame = -1``.

Physical-commonsense score (``pc``, 1-5), deterministic
    plausible                                   -> 5
    violation with severity ``s`` (1 subtle, 2 clear, 3 blatant; see ``VIOLATIONS``)
        early onset (onset_frame <= frames / 2)  -> pc = 4 - s    (3, 2, 1)
        late onset  (onset_frame >  frames / 2)  -> pc = 5 - s    (4, 3, 2)
    ``sa`` (semantic adherence) is 5 for every clip (the clip shows what the caption describes), ``joint`` is 1 when
    sa >= 4 and pc >= 4, and ``is_hard`` is true for violations of severity 1 or with a late onset.

Captions describe the scene and the intended physical event only; they never mention the violation. The caption
(and the look of the scene) is drawn from the clip's random stream before anything else, so a plausible clip and a
violation clip with the same stream share the caption.

Rule columns (``physics_rules_followed``, ``physics_rules_unfollowed``, ``physics_rules_cannot_be_determined``) hold
rule sentences joined by newlines (empty string for none); ``human_violated_rules`` holds a one-sentence account of
what goes wrong (empty for plausible clips).

Encoding: H.264 (libx264 from PyAV's bundled FFmpeg; 4:2:0 for even sizes, 4:4:4 for odd sizes, which 4:2:0 cannot
represent). When no H.264 encoder is available, clips fall back to MPEG-4 part 2 (``mpeg4``), padded to even sizes.
Output is deterministic: the same seed gives byte-identical mp4 files and identical records, for any worker count,
because each clip's random stream is derived from ``(seed, index)`` only.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from recipe_lib.data.videophy2 import VIDEOPHY2_COLUMNS
from recipe_lib.errors import ConfigError, DataError, RecipeError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

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
)
_INT_COLUMNS = ("sa", "pc", "joint", "onset_frame", "seed")
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

    n: int = 60
    out_dir: Path = Path("build/data/synthetic")
    seed: int = 0
    style: Literal["varied", "contrast"] = "varied"
    width: int = 112
    height: int = 112
    frames: int = 16
    fps: int = 8
    plausible_fraction: float = 0.5
    scenes: list[str] | None = None
    violations: list[str] | None = None
    workers: int = 0

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
        _atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        return path


# --------------------------------------------------------------------------------------------------------------------
# Looks and captions
# --------------------------------------------------------------------------------------------------------------------

RGB = tuple[int, int, int]

_BACKGROUNDS: tuple[tuple[str, RGB], ...] = (
    ("pale blue", (186, 212, 236)),
    ("light grey", (208, 208, 208)),
    ("cream", (240, 232, 208)),
    ("dark navy", (28, 38, 68)),
    ("soft green", (198, 224, 198)),
    ("charcoal", (48, 48, 54)),
    ("lavender", (214, 204, 236)),
)
# (caption phrase, short name, colour, texture)
_FLOORS: tuple[tuple[str, str, RGB, str], ...] = (
    ("a wooden floor", "floor", (139, 94, 60), "planks"),
    ("a concrete floor", "floor", (132, 132, 128), "speckle"),
    ("a tiled floor", "floor", (176, 178, 190), "tiles"),
    ("a grass lawn", "lawn", (72, 132, 60), "speckle"),
    ("a patch of sand", "sand", (196, 172, 122), "speckle"),
    ("a dark stone floor", "floor", (74, 68, 64), "tiles"),
)
_OBJECT_COLOURS: tuple[tuple[str, RGB], ...] = (
    ("red", (212, 40, 40)),
    ("blue", (40, 84, 212)),
    ("green", (36, 168, 72)),
    ("yellow", (242, 212, 40)),
    ("orange", (246, 140, 30)),
    ("purple", (142, 60, 182)),
    ("white", (246, 246, 246)),
    ("black", (22, 22, 22)),
    ("pink", (242, 122, 172)),
    ("teal", (30, 160, 160)),
)
_WALLS: tuple[tuple[str, RGB], ...] = (
    ("a brick wall", (164, 72, 52)),
    ("a grey wall", (112, 112, 122)),
    ("a wooden wall", (118, 80, 48)),
    ("a white wall", (232, 232, 232)),
)


@dataclass(frozen=True)
class _Look:
    background_name: str
    bg_top: RGB
    bg_bottom: RGB
    floor_phrase: str
    floor_short: str
    floor: RGB
    texture: str
    wall_phrase: str
    wall: RGB
    objects: tuple[tuple[str, RGB], ...]
    shading: bool
    texture_seed: int


def _dist(a: RGB, b: RGB) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _sample_look(rng: np.random.Generator, style: str, n_objects: int) -> _Look:
    if style == "contrast":
        return _Look(
            background_name="black",
            bg_top=(0, 0, 0),
            bg_bottom=(0, 0, 0),
            floor_phrase="a grey floor",
            floor_short="floor",
            floor=(128, 128, 128),
            texture="flat",
            wall_phrase="a grey wall",
            wall=(128, 128, 128),
            objects=tuple(("white", (255, 255, 255)) for _ in range(n_objects)),
            shading=False,
            texture_seed=0,
        )
    bg_name, bg = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    floor_phrase, floor_short, floor, texture = _FLOORS[int(rng.integers(len(_FLOORS)))]
    shade = float(rng.uniform(0.82, 0.95))
    bg_bottom = tuple(int(round(c * shade)) for c in bg)
    order = rng.permutation(len(_OBJECT_COLOURS))
    objects: list[tuple[str, RGB]] = []
    for idx in order:
        name, colour = _OBJECT_COLOURS[int(idx)]
        if _dist(colour, bg) < 130 or _dist(colour, floor) < 110:
            continue
        if any(_dist(colour, other) < 120 for _, other in objects):
            continue
        objects.append((name, colour))
        if len(objects) == n_objects:
            break
    walls = [w for w in _WALLS if _dist(w[1], bg) > 90 and all(_dist(w[1], c) > 90 for _, c in objects)]
    wall_phrase, wall = walls[int(rng.integers(len(walls)))] if walls else ("a grey wall", (112, 112, 122))
    return _Look(
        background_name=bg_name,
        bg_top=bg,
        bg_bottom=bg_bottom,  # type: ignore[arg-type]
        floor_phrase=floor_phrase,
        floor_short=floor_short,
        floor=floor,
        texture=texture,
        wall_phrase=wall_phrase,
        wall=wall,
        objects=tuple(objects),
        shading=True,
        texture_seed=int(rng.integers(2**31)),
    )


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


_CAPTIONS: dict[str, tuple[str, ...]] = {
    "free_fall": (
        "{A_c0} ball is released from rest above {floor} and falls to the ground.",
        "{A_c0} ball drops straight down onto {floor}.",
    ),
    "projectile": (
        "{A_c0} ball is thrown forward and flies in an arc over {floor}.",
        "{A_c0} ball is launched from the left and follows a curved path across {floor}.",
    ),
    "bounce": (
        "{A_c0} ball is dropped onto {floor} and bounces.",
        "{A_c0} rubber ball falls onto {floor} and bounces a few times.",
    ),
    "slide_friction": (
        "{A_c0} box slides across {floor} and slows down because of friction.",
        "{A_c0} box is pushed along {floor} and slides, slowing as friction acts on it.",
    ),
    "collision": (
        "{A_c0} ball rolls across {floor} and hits {a_c1} ball resting on it.",
        "{A_c0} ball rolls toward {a_c1} ball at rest on {floor} and collides with it.",
    ),
    "wall_rebound": (
        "{A_c0} ball rolls along {floor} toward {wall} and rebounds off it.",
        "{A_c0} ball rolls across {floor}, hits {wall} and rolls back.",
    ),
}
_UPSAMPLED: dict[str, str] = {
    "free_fall": "{A_c0} ball starts at rest above the {short}. It is released, falls straight down under gravity, "
    "speeding up as it goes, and lands on the {short}.",
    "projectile": "{A_c0} ball is launched at an angle from the left side of the frame. It follows a curved path "
    "under gravity, comes down on the {short} and rolls on to the right.",
    "bounce": "{A_c0} ball starts at rest above the {short}. It is dropped, falls under gravity and bounces on the "
    "{short} several times.",
    "slide_friction": "{A_c0} box sits on the {short} near the left side of the frame and is pushed to the right. "
    "It slides along the {short} and gradually slows down as friction acts on it.",
    "collision": "{A_c0} ball rolls from the left across the {short} toward {a_c1} ball that sits at rest. The two "
    "balls collide and the {c1} ball is knocked to the right.",
    "wall_rebound": "{A_c0} ball rolls from the left along the {short} toward {wall} on the right side of the frame. "
    "It hits the wall and rolls back to the left, a little slower than it came.",
}


def _captions(scene: str, look: _Look, rng: np.random.Generator) -> tuple[str, str]:
    names = [name for name, _ in look.objects] + ["white"] * 2
    values = {
        "A_c0": _cap(_a(names[0])),
        "a_c1": _a(names[1]),
        "c1": names[1],
        "floor": look.floor_phrase,
        "short": look.floor_short,
        "wall": look.wall_phrase,
    }
    templates = _CAPTIONS[scene]
    caption = templates[int(rng.integers(len(templates)))].format(**values)
    body = _UPSAMPLED[scene].format(**values)
    upsampled = (
        f"A static side view of a simple scene with {_a(look.background_name)} background and "
        f"{look.floor_phrase} along the bottom of the frame. {body} The camera does not move and there is nothing "
        "else in the scene."
    )
    return caption, upsampled


# --------------------------------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Body:
    shape: Literal["ball", "box"]
    x: float
    y: float
    hw: float  # half width (radius for a ball) at scale 1
    hh: float  # half height
    color: RGB
    vx: float = 0.0
    vy: float = 0.0
    mass: float = 1.0
    restitution: float = 0.0  # floor bounce
    wall_restitution: float = 0.7
    friction: float = 0.0  # deceleration (px/s^2) while resting on the floor; negative speeds it up
    gravity: float = 1.0  # multiplier of the scene's gravity
    scale: float = 1.0
    scale_target: float = 1.0
    scale_speed: float = 0.0  # scale units per second
    visible: bool = True
    frozen: bool = False
    ghost: bool = False  # no contacts with other bodies
    pass_walls: bool = False
    floor_depth: float = 0.0  # the surface this body rests on lies this far below the drawn floor line
    sink_speed: float = 0.0
    sink_max: float = 0.0
    stick: bool = False  # stops dead when it reaches its floor surface
    floor_boost: float | None = None  # restitution for the next real floor impact only
    wall_boost: float | None = None  # restitution for the next wall impact only


@dataclass
class _Setup:
    scene: str
    width: int
    height: int
    frames: int
    fps: int
    floor_y: float
    gravity: float
    bodies: list[_Body]
    walls: list[tuple[float, float, float]] = field(default_factory=list)  # (left x, right x, top y)
    pair_restitution: float = 1.0
    pair_energy_gain: float | None = None  # total kinetic energy after the first contact, as a multiple of before
    primary: int = 0  # the body whose motion the clip is about
    target: int = 0  # the body that vanishes, teleports or changes size


@dataclass(frozen=True)
class _State:
    x: float
    y: float
    vx: float
    vy: float
    hw: float
    hh: float
    visible: bool


@dataclass
class _Log:
    floor_hits: list[tuple[float, int]] = field(default_factory=list)
    wall_hits: list[tuple[float, int]] = field(default_factory=list)
    pair_hits: list[tuple[float, int, int, float, float, float, float]] = field(default_factory=list)


@dataclass
class _Run:
    states: list[list[_State]]  # [frame][body]
    log: _Log


_Event = tuple[float, Callable[[list[_Body]], None]]


def _substeps(frames: int) -> int:
    return max(4, 512 // frames)


def _simulate(setup: _Setup, events: Sequence[_Event] = ()) -> _Run:
    bodies = [dataclasses.replace(b) for b in setup.bodies]
    pending = sorted(events, key=lambda e: e[0])
    sub = _substeps(setup.frames)
    dt = 1.0 / (setup.fps * sub)
    log = _Log()
    states: list[list[_State]] = []
    next_event = 0

    def fire(now: float) -> None:
        nonlocal next_event
        while next_event < len(pending) and pending[next_event][0] <= now + 1e-9:
            pending[next_event][1](bodies)
            next_event += 1

    for k in range(setup.frames):
        t = k / setup.fps
        fire(t)
        states.append([_snapshot(b) for b in bodies])
        if k == setup.frames - 1:
            break
        for s in range(sub):
            now = t + s * dt
            fire(now)
            _step(setup, bodies, dt, now, log)
    return _Run(states, log)


def _snapshot(b: _Body) -> _State:
    return _State(b.x, b.y, b.vx, b.vy, b.hw * b.scale, b.hh * b.scale, b.visible)


def _step(setup: _Setup, bodies: list[_Body], dt: float, now: float, log: _Log) -> None:
    g = setup.gravity
    v_rest = 3.0 * g * dt
    for i, b in enumerate(bodies):
        if b.frozen:
            continue
        if b.scale != b.scale_target:
            delta = b.scale_speed * dt
            if b.scale_target > b.scale:
                b.scale = min(b.scale + delta, b.scale_target)
            else:
                b.scale = max(b.scale - delta, b.scale_target)
        hw, hh = b.hw * b.scale, b.hh * b.scale
        surface = setup.floor_y + b.floor_depth
        resting = b.y + hh >= surface - 1e-6 and b.vy == 0.0 and b.gravity > 0
        if resting and b.sink_speed > 0 and b.floor_depth < b.sink_max:
            step = min(b.sink_speed * dt, b.sink_max - b.floor_depth)
            b.floor_depth += step
            b.y += step
            surface += step
        b.vy += g * b.gravity * dt
        if resting and b.friction and b.vx:
            sign = 1.0 if b.vx > 0 else -1.0
            if b.friction > 0:
                b.vx -= sign * min(abs(b.vx), b.friction * dt)
            else:
                b.vx -= sign * b.friction * dt
        b.x += b.vx * dt
        b.y += b.vy * dt
        if b.y + hh > surface and b.gravity > 0:
            b.y = surface - hh
            if b.vy > 0:
                v_in = b.vy
                if b.stick:
                    b.vx = b.vy = 0.0
                else:
                    e = b.restitution
                    if b.floor_boost is not None and v_in > v_rest:
                        e, b.floor_boost = b.floor_boost, None
                    b.vy = -e * v_in
                    if abs(b.vy) < v_rest:
                        b.vy = 0.0
                if v_in > v_rest:
                    log.floor_hits.append((now, i))
        for left, right, top in setup.walls:
            if b.pass_walls or b.y + hh <= top:
                continue
            hit = False
            if b.vx > 0 and b.x < left and b.x + hw > left:
                b.x = left - hw
                hit = True
            elif b.vx < 0 and b.x > right and b.x - hw < right:
                b.x = right + hw
                hit = True
            if hit:
                e = b.wall_restitution
                if b.wall_boost is not None:
                    e, b.wall_boost = b.wall_boost, None
                b.vx = -e * b.vx
                log.wall_hits.append((now, i))
    for i in range(len(bodies)):
        for j in range(i + 1, len(bodies)):
            _pair_contact(setup, bodies, i, j, now, log)


def _pair_contact(setup: _Setup, bodies: list[_Body], i: int, j: int, now: float, log: _Log) -> None:
    a, b = bodies[i], bodies[j]
    if a.ghost or b.ghost or a.shape != "ball" or b.shape != "ball":
        return
    dx, dy = b.x - a.x, b.y - a.y
    dist = math.hypot(dx, dy)
    reach = a.hw * a.scale + b.hw * b.scale
    if dist >= reach or dist == 0.0:
        return
    nx, ny = dx / dist, dy / dist
    closing = (a.vx - b.vx) * nx + (a.vy - b.vy) * ny
    if closing > 0:
        inv_a, inv_b = 1.0 / a.mass, 1.0 / b.mass
        impulse = (1.0 + setup.pair_restitution) * closing / (inv_a + inv_b)
        energy_before = 0.5 * (a.mass * (a.vx**2 + a.vy**2) + b.mass * (b.vx**2 + b.vy**2))
        a.vx -= impulse * inv_a * nx
        a.vy -= impulse * inv_a * ny
        b.vx += impulse * inv_b * nx
        b.vy += impulse * inv_b * ny
        if setup.pair_energy_gain is not None and not log.pair_hits:
            # The struck ball leaves with enough speed that the total kinetic energy is multiplied by the gain.
            energy_a = 0.5 * a.mass * (a.vx**2 + a.vy**2)
            speed = math.sqrt(max(2.0 * (setup.pair_energy_gain * energy_before - energy_a) / b.mass, 0.0))
            b.vx, b.vy = speed * nx, speed * ny
        log.pair_hits.append((now, i, j, a.vx, a.vy, b.vx, b.vy))
    overlap = reach - dist
    a.x -= nx * overlap * 0.5
    b.x += nx * overlap * 0.5


# --------------------------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------------------------


def _frame_geometry(rng: np.random.Generator, width: int, height: int) -> tuple[float, float]:
    floor_y = height * float(rng.uniform(0.76, 0.86))
    size = float(min(width, height))
    return floor_y, size


def _build_scene(
    scene: str, rng: np.random.Generator, look: _Look, width: int, height: int, frames: int, fps: int
) -> _Setup:
    duration = (frames - 1) / fps
    floor_y, size = _frame_geometry(rng, width, height)
    u = rng.uniform
    colours = [c for _, c in look.objects] + [(255, 255, 255)] * 2

    def setup(gravity: float, bodies: list[_Body], **kw: Any) -> _Setup:
        return _Setup(scene, width, height, frames, fps, floor_y, gravity, bodies, **kw)

    if scene in ("free_fall", "bounce"):
        r = size * u(0.06, 0.1)
        x0 = width * u(0.25, 0.75)
        y0 = max(height * (u(0.1, 0.3) if scene == "free_fall" else u(0.15, 0.4)), r + 1)
        drop = floor_y - r - y0
        fall_time = duration * (u(0.4, 0.65) if scene == "free_fall" else u(0.22, 0.4))
        g = 2.0 * drop / fall_time**2
        e = u(0.15, 0.35) if scene == "free_fall" else u(0.6, 0.82)
        return setup(g, [_Body("ball", x0, y0, r, r, colours[0], restitution=e)])
    if scene == "projectile":
        r = size * u(0.06, 0.09)
        x0 = max(width * u(0.06, 0.16), r + 1)
        y0 = floor_y - r - height * u(0.0, 0.25)
        apex = max(height * u(0.1, 0.28), r + 1)
        if apex > y0 - 0.1 * height:
            apex = y0 - 0.1 * height
        x_land = width * u(0.5, 0.72)
        t_land = duration * u(0.5, 0.72)
        rise, drop = y0 - apex, floor_y - r - apex
        g = ((math.sqrt(2 * rise) + math.sqrt(2 * drop)) / t_land) ** 2
        vx = (x_land - x0) / t_land
        room = width - r - 2 - x_land
        friction = vx**2 / (2 * room * u(0.45, 0.8))
        ball = _Body("ball", x0, y0, r, r, colours[0], vx=vx, vy=-math.sqrt(2 * g * rise))
        ball.restitution, ball.friction = u(0.15, 0.35), friction
        return setup(g, [ball])
    if scene == "slide_friction":
        hw = size * u(0.06, 0.1)
        hh = hw * u(0.7, 1.0)
        x0 = max(width * u(0.08, 0.2), hw + 1)
        x_stop = width * u(0.55, 0.8)
        t_stop = duration * u(0.5, 0.8)
        v0 = 2 * (x_stop - x0) / t_stop
        g = 3.0 * height / duration**2
        box = _Body("box", x0, floor_y - hh, hw, hh, colours[0], vx=v0, friction=v0 / t_stop)
        return setup(g, [box])
    if scene == "collision":
        ra, rb = size * u(0.06, 0.09), size * u(0.06, 0.09)
        xa = max(width * u(0.08, 0.18), ra + 1)
        xb = width * u(0.42, 0.55)
        t_contact = duration * u(0.35, 0.5)
        gap = xb - rb - ra - xa
        decel = gap / t_contact**2 * u(0.2, 0.6)
        va = (gap + 0.5 * decel * t_contact**2) / t_contact
        g = 3.0 * height / duration**2
        e = u(0.85, 1.0)
        # The struck ball rolls a fifth to a third of the frame before friction stops it.
        v_hit = va - decel * t_contact
        vb = (1 + e) * ra * ra * v_hit / (ra * ra + rb * rb)
        travel = min(width * u(0.18, 0.32), width - rb - 2 - xb)
        a = _Body("ball", xa, floor_y - ra, ra, ra, colours[0], vx=va, mass=ra * ra, friction=decel)
        b = _Body("ball", xb, floor_y - rb, rb, rb, colours[1], mass=rb * rb, friction=vb * vb / (2 * travel))
        # Draw order puts the striker last, on top.
        return setup(g, [b, a], pair_restitution=e, primary=1, target=int(rng.integers(2)))
    if scene == "wall_rebound":
        r = size * u(0.06, 0.1)
        thickness = max(width * u(0.04, 0.07), 3.0)
        left = width * u(0.72, 0.84)
        top = floor_y - height * u(0.35, 0.6)
        x0 = max(width * u(0.08, 0.25), r + 1)
        t_contact = duration * u(0.3, 0.5)
        gap = left - r - x0
        decel = gap / t_contact**2 * u(0.1, 0.4)
        v0 = (gap + 0.5 * decel * t_contact**2) / t_contact
        g = 3.0 * height / duration**2
        ball = _Body("ball", x0, floor_y - r, r, r, colours[0], vx=v0, friction=decel, wall_restitution=u(0.55, 0.85))
        return setup(g, [ball], walls=[(left, left + thickness, top)])
    raise RecipeError(f"unknown scene {scene!r}; valid scenes: {', '.join(SCENES)}")  # pragma: no cover


def _in_frame(setup: _Setup, state: _State) -> bool:
    return 0.0 <= state.x <= setup.width and 0.0 <= state.y <= setup.height


def _scene_ok(setup: _Setup, run: _Run) -> bool:
    """A plausible run keeps every object in the frame and shows the scene's event within the clip."""
    if not all(_in_frame(setup, s) for frame in run.states for s in frame):
        return False
    last = setup.frames - MIN_VISIBLE_FRAMES
    if setup.scene in ("free_fall", "bounce", "projectile"):
        return any(t * setup.fps <= last for t, _ in run.log.floor_hits)
    if setup.scene == "collision":
        return any(t * setup.fps <= last for t, *_ in run.log.pair_hits)
    if setup.scene == "wall_rebound":
        return any(t * setup.fps <= last for t, _ in run.log.wall_hits)
    return True


# --------------------------------------------------------------------------------------------------------------------
# Violations as changes to the simulation
# --------------------------------------------------------------------------------------------------------------------


def _airborne(setup: _Setup, s: _State) -> bool:
    return s.y + s.hh < setup.floor_y - 0.1 * setup.height


def _speed(s: _State) -> float:
    return math.hypot(s.vx, s.vy)


def _apply_violation(
    violation: str, setup: _Setup, plain: _Run, rng: np.random.Generator
) -> tuple[_Setup, list[_Event]] | None:
    """The altered setup and events for one violation, or None when this draw of the scene cannot show it."""
    frames, fps = setup.frames, setup.fps
    setup = dataclasses.replace(setup, bodies=[dataclasses.replace(b) for b in setup.bodies])
    p = setup.primary
    window = list(range(1, frames - MIN_VISIBLE_FRAMES))  # event frames leave room to show the violation

    def pick(frames_ok: list[int]) -> int | None:
        return int(frames_ok[int(rng.integers(len(frames_ok)))]) if frames_ok else None

    def at(k: int, fn: Callable[[list[_Body]], None]) -> list[_Event]:
        return [(k / fps, fn)]

    states = plain.states
    if violation in ("hover", "upward_acceleration"):
        if setup.scene == "slide_friction":
            k = pick(window)
        else:
            k = pick([k for k in window if _airborne(setup, states[k][p])])
        if k is None:
            return None
        if violation == "hover":

            def freeze(bodies: list[_Body]) -> None:
                bodies[p].frozen = True
                bodies[p].vx = bodies[p].vy = 0.0

            return setup, at(k, freeze)
        lift = float(rng.uniform(1.5, 2.5))

        def reverse(bodies: list[_Body]) -> None:
            bodies[p].gravity = -lift

        return setup, at(k, reverse)

    if violation == "size_change":
        k = pick(window)
        if k is None:
            return None
        factor = float(rng.uniform(1.4, 1.75)) if rng.random() < 0.5 else float(rng.uniform(0.5, 0.68))
        ramp = float(rng.uniform(3.0, 5.0)) / fps
        t = setup.target

        def resize(bodies: list[_Body]) -> None:
            bodies[t].scale_target = factor
            bodies[t].scale_speed = abs(factor - 1.0) / ramp

        return setup, at(k, resize)

    if violation == "energy_gain":
        if setup.scene == "bounce":
            r = setup.bodies[p].hh
            drop = setup.floor_y - r - setup.bodies[p].y
            room = setup.floor_y - r - r * 0.5
            boost = min(float(rng.uniform(1.2, 1.35)), math.sqrt(room / drop))
            if boost < 1.12:
                return None
            setup.bodies[p].floor_boost = boost
            return setup, []
        if setup.scene == "wall_rebound":
            setup.bodies[p].wall_boost = float(rng.uniform(1.35, 1.7))
            return setup, []
        if setup.scene == "collision":
            setup.pair_energy_gain = float(rng.uniform(2.0, 3.0))
            return setup, []
        v0 = _speed(states[0][p])
        k = pick([k for k in window if _speed(states[k][p]) >= 0.4 * v0])
        if k is None:
            return None
        push = setup.bodies[p].friction * float(rng.uniform(0.6, 1.2))

        def accelerate(bodies: list[_Body]) -> None:
            bodies[p].friction = -push

        return setup, at(k, accelerate)

    if violation == "no_momentum_transfer":
        setup.bodies[p].ghost = True
        return setup, []

    if violation == "sudden_stop":
        top_speed = max(_speed(f[p]) for f in states)
        ok = [k for k in window if _speed(states[k][p]) >= 0.4 * top_speed]
        if setup.scene == "projectile":
            ok = [k for k in ok if _airborne(setup, states[k][p])]
        elif setup.scene == "collision":
            if not plain.log.pair_hits:
                return None
            ok = [k for k in ok if k / fps < plain.log.pair_hits[0][0] - 1.5 / fps]
        elif setup.scene == "wall_rebound":
            hits = [t for t, _ in plain.log.wall_hits]
            ok = [k for k in ok if all(abs(k / fps - t) > 1.5 / fps for t in hits)]
        k = pick(ok)
        if k is None:
            return None
        horizontal_only = setup.scene == "projectile"

        def stop(bodies: list[_Body]) -> None:
            bodies[p].vx = 0.0
            if not horizontal_only:
                bodies[p].vy = 0.0

        return setup, at(k, stop)

    if violation == "effect_before_cause":
        if not plain.log.pair_hits:
            return None
        t_hit, i, j, ivx, ivy, jvx, jvy = plain.log.pair_hits[0]
        after = {i: (ivx, ivy), j: (jvx, jvy)}
        struck, striker = 1 - p, p
        lead = max(1.5 / fps, float(rng.uniform(0.15, 0.3)) * (frames - 1) / fps)
        if t_hit - lead < 1.0 / fps:
            return None

        def early(bodies: list[_Body]) -> None:
            # The struck ball leaves with the velocity the contact would give it, before the contact happens.
            for body in bodies:
                body.ghost = True
            bodies[struck].vx, bodies[struck].vy = after[struck]

        def late(bodies: list[_Body]) -> None:
            # The striker reacts at the moment it would have touched the (now departed) ball.
            bodies[striker].vx, bodies[striker].vy = after[striker]

        return setup, [(t_hit - lead, early), (t_hit, late)]

    if violation == "penetration":
        body = setup.bodies[p]
        if setup.scene == "wall_rebound":
            body.pass_walls = True
            return setup, []
        if setup.scene == "slide_friction":
            k = pick(window)
            if k is None:
                return None
            depth = 2 * body.hh * float(rng.uniform(0.6, 0.9))
            speed = depth / (float(rng.uniform(3.0, 5.0)) / fps)

            def sink(bodies: list[_Body]) -> None:
                bodies[p].sink_speed, bodies[p].sink_max = speed, depth

            return setup, at(k, sink)
        body.floor_depth = body.hh * float(rng.uniform(1.0, 1.7))
        body.stick = True
        return setup, []

    if violation in ("vanish", "teleport"):
        t = setup.target
        ok = [k for k in window if states[k][t].visible and _in_frame(setup, states[k][t])]
        k = pick(ok)
        if k is None:
            return None
        if violation == "vanish":

            def hide(bodies: list[_Body]) -> None:
                bodies[t].visible = False
                bodies[t].ghost = True

            return setup, at(k, hide)
        shift = _teleport_shift(setup, states[k], t, rng)
        if shift is None:
            return None

        def jump(bodies: list[_Body]) -> None:
            bodies[t].x += shift

        return setup, at(k, jump)

    raise RecipeError(f"unknown violation {violation!r}; valid violations: {', '.join(VIOLATIONS)}")  # pragma: no cover


def _teleport_shift(setup: _Setup, frame: list[_State], t: int, rng: np.random.Generator) -> float | None:
    """A horizontal jump of a quarter to a third of the frame that stays in view, on the same side of walls and
    other objects, and clear of them."""
    me = frame[t]
    size = float(rng.uniform(0.22, 0.35)) * setup.width
    direction = 1.0 if rng.random() < 0.5 else -1.0
    for sign in (direction, -direction):
        x = me.x + sign * size
        if not me.hw + 1 <= x <= setup.width - me.hw - 1:
            continue
        blocked = False
        for left, right, top in setup.walls:
            if me.y + me.hh > top and ((me.x < left) != (x < left) or x + me.hw > left and x - me.hw < right):
                blocked = True
        for other_index, other in enumerate(frame):
            if other_index == t or not other.visible:
                continue
            if (me.x < other.x) != (x < other.x) or abs(x - other.x) < me.hw + other.hw + 2:
                blocked = True
        if not blocked:
            return sign * size
    return None


def _deviation(a: _State, b: _State) -> float:
    if a.visible != b.visible:
        return math.inf
    if not a.visible:
        return 0.0
    return math.hypot(a.x - b.x, a.y - b.y) + abs(a.hw - b.hw) + abs(a.hh - b.hh)


def _onset(setup: _Setup, plain: _Run, bent: _Run) -> int | None:
    """First frame that departs from correct physics, when the violation is clearly visible from it on; else None."""
    devs = [max(_deviation(a, b) for a, b in zip(pa, pb)) for pa, pb in zip(plain.states, bent.states)]
    onset = next((k for k, d in enumerate(devs) if d > 1e-6), None)
    if onset is None or onset < 1 or onset > setup.frames - MIN_VISIBLE_FRAMES:
        return None
    if max(devs[onset:]) < max(3.0, 0.08 * min(setup.width, setup.height)):
        return None
    # The objects are in view while the violation starts.
    for k in range(min(onset + 2, setup.frames)):
        if not all(_in_frame(setup, s) for s in bent.states[k] if s.visible):
            return None
    return onset


def _shows(violation: str, setup: _Setup, bent: _Run, onset: int) -> bool:
    """Violation-specific checks that the clip shows what the violation's name says."""
    states = bent.states
    if violation == "upward_acceleration":
        # It ends up clearly higher than where it was when the violation began: it falls up.
        p = setup.primary
        return min(f[p].y for f in states[onset:]) < states[onset - 1][p].y - 0.05 * setup.height
    if violation == "effect_before_cause":
        # The struck ball is seen moving while a clear gap still separates it from the other ball.
        a, b = states[onset][setup.primary], states[onset][1 - setup.primary]
        return abs(b.x - a.x) - a.hw - b.hw >= max(2.0, 0.04 * setup.width)
    return True


# --------------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------------


def _backdrop(setup: _Setup, look: _Look) -> np.ndarray:
    h, w = setup.height, setup.width
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    top, bottom = np.array(look.bg_top, np.float32), np.array(look.bg_bottom, np.float32)
    canvas = np.broadcast_to((top * (1 - rows) + bottom * rows)[:, None, :], (h, w, 3)).copy()
    floor = np.broadcast_to(np.array(look.floor, np.float32), (h, w, 3)).copy()
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    if look.texture != "flat":
        tex_rng = np.random.default_rng(look.texture_seed)
        unit = max(3.0, h / 14)
        if look.texture == "planks":
            shade = np.where((ys - setup.floor_y) % unit < 1.0, 0.8, 1.0) * np.ones_like(xs)
            joints = ((xs + 37 * np.floor((ys - setup.floor_y) / unit)) % (3 * unit)) < 1.0
            shade = np.where(joints, 0.85, shade)
        elif look.texture == "tiles":
            checker = (np.floor(xs / (1.5 * unit)) + np.floor((ys - setup.floor_y) / unit)) % 2
            shade = 0.93 + 0.07 * checker
        else:
            shade = 1.0 + tex_rng.uniform(-0.06, 0.06, size=(h, w)).astype(np.float32)
        floor *= shade[..., None]
        edge = np.clip(1.0 - np.abs(ys + 0.5 - setup.floor_y), 0.0, 1.0)
        floor *= (1.0 - 0.25 * edge)[..., None]
    cover = np.clip(ys + 1.0 - setup.floor_y, 0.0, 1.0)[..., None]
    canvas = canvas * (1 - cover) + floor * cover
    for left, right, top_y in setup.walls:
        wall_cover = (
            np.clip(np.minimum(xs + 1.0 - left, right - xs), 0.0, 1.0)
            * np.clip(ys + 1.0 - top_y, 0.0, 1.0)
            * np.clip(setup.floor_y - ys, 0.0, 1.0)
        )[..., None]
        wall = np.array(look.wall, np.float32)
        canvas = canvas * (1 - wall_cover) + wall * wall_cover
    return canvas


def _draw(canvas: np.ndarray, body: _Body, state: _State, shading: bool) -> None:
    h, w = canvas.shape[:2]
    x0, x1 = max(int(math.floor(state.x - state.hw - 1)), 0), min(int(math.ceil(state.x + state.hw + 1)), w)
    y0, y1 = max(int(math.floor(state.y - state.hh - 1)), 0), min(int(math.ceil(state.y + state.hh + 1)), h)
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - state.x
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - state.y
    if body.shape == "ball":
        cover = np.clip(state.hw - np.sqrt(dx * dx + dy * dy) + 0.5, 0.0, 1.0)
        radius = max(state.hw, 1e-3)
        light = 1.0 - 0.22 * (dx + dy) / (radius * 1.414) if shading else np.ones_like(cover)
    else:
        cover = np.clip(state.hw - np.abs(dx) + 0.5, 0.0, 1.0) * np.clip(state.hh - np.abs(dy) + 0.5, 0.0, 1.0)
        edge = (np.abs(dx) > state.hw - 1.5) | (np.abs(dy) > state.hh - 1.5)
        light = np.where(edge, 0.8, 1.0) if shading else np.ones_like(cover)
    colour = np.clip(np.array(body.color, np.float32) * light[..., None], 0, 255)
    patch = canvas[y0:y1, x0:x1]
    patch += (colour - patch) * cover[..., None]


def _render(setup: _Setup, look: _Look, run: _Run) -> np.ndarray:
    backdrop = _backdrop(setup, look)
    out = np.empty((setup.frames, setup.height, setup.width, 3), np.uint8)
    for k, frame in enumerate(run.states):
        canvas = backdrop.copy()
        for body, state in zip(setup.bodies, frame):
            if state.visible:
                _draw(canvas, body, state, look.shading)
        out[k] = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------------------------------
# One clip
# --------------------------------------------------------------------------------------------------------------------


def render_clip(
    scene: str, violation: str, rng: np.random.Generator, cfg: SynthConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one clip: frames ``(T, H, W, 3)`` uint8 and its record fields (all but ``video_url`` and ``seed``).

    ``violation`` is ``"none"`` for a plausible clip or a name in ``VIOLATIONS`` that applies to ``scene``.
    Only ``width``, ``height``, ``frames``, ``fps`` and ``style`` of ``cfg`` are used.
    """
    _check_scene(scene)
    if violation != "none":
        if violation not in VIOLATIONS:
            raise RecipeError(f"unknown violation {violation!r}; valid violations: none, {', '.join(VIOLATIONS)}")
        if scene not in VIOLATIONS[violation].scenes:
            raise RecipeError(
                f"violation {violation!r} does not apply to scene {scene!r}",
                hint=f"{violation} applies to: {', '.join(VIOLATIONS[violation].scenes)}",
            )
    _check_int("width", cfg.width, MIN_SIZE, 8192)
    _check_int("height", cfg.height, MIN_SIZE, 8192)
    _check_int("frames", cfg.frames, MIN_FRAMES, 10_000)
    _check_int("fps", cfg.fps, 1, 1000)
    if cfg.style not in ("varied", "contrast"):
        raise ConfigError(f"unknown style {cfg.style!r}", hint="use 'varied' or 'contrast'")

    look = _sample_look(rng, cfg.style, 2 if scene == "collision" else 1)
    caption, upsampled = _captions(scene, look, rng)
    onset: int | None = None
    for _attempt in range(200):
        setup = _build_scene(scene, rng, look, cfg.width, cfg.height, cfg.frames, cfg.fps)
        plain = _simulate(setup)
        if not _scene_ok(setup, plain):
            continue
        if violation == "none":
            run = plain
            break
        changed = _apply_violation(violation, setup, plain, rng)
        if changed is None:
            continue
        setup, events = changed
        run = _simulate(setup, events)
        onset = _onset(setup, plain, run)
        if onset is not None and _shows(violation, setup, run, onset):
            break
        onset = None
    else:  # pragma: no cover - every scene/violation pair is exercised by the tests
        raise RecipeError(
            f"could not draw a clip of {scene}/{violation} at {cfg.width}x{cfg.height}x{cfg.frames}",
            hint="use more frames",
        )
    frames = _render(setup, look, run)
    rules = scene_rules(scene)
    if violation == "none":
        unfollowed: list[str] = []
        explanation = ""
        category = "none"
    else:
        unfollowed = [_rule(scene, violation)]
        explanation = _description(scene, violation)
        category = VIOLATIONS[violation].category
    pc = pc_score(violation, onset, cfg.frames)
    record = {
        "caption": caption,
        "upsampled_caption": upsampled,
        "sa": 5,
        "pc": pc,
        "joint": int(pc >= 4),
        "physics_rules_followed": "\n".join(r for r in rules if r not in unfollowed),
        "physics_rules_unfollowed": "\n".join(unfollowed),
        "physics_rules_cannot_be_determined": "",
        "human_violated_rules": explanation,
        "action": _SCENE_ACTION[scene],
        "category": f"synthetic/{scene}",
        "is_hard": is_hard(violation, onset, cfg.frames),
        "model_name": MODEL_NAME,
        "scene": scene,
        "violation": violation,
        "violation_category": category,
        "onset_frame": -1 if onset is None else onset,
    }
    return frames, record


# --------------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def h264_encoder() -> str:
    """The first H.264 encoder PyAV offers (``libx264``, ``h264``, ``libopenh264``), else ``mpeg4``."""
    import av

    for name in ("libx264", "h264", "libopenh264"):
        try:
            codec = av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - any failure means the encoder is missing
            continue
        if "nvenc" not in codec.name and "vaapi" not in codec.name:
            return codec.name
    return "mpeg4"


def write_clip(frames: np.ndarray, path: str | Path, fps: float = 8) -> Path:
    """Encode ``frames`` (``(T, H, W, 3)`` uint8 RGB) as an mp4 at ``path``, atomically; return the path.

    H.264 4:2:0 for even sizes, 4:4:4 for odd sizes (so any size from 2x2 round-trips); one-frame clips are fine.
    """
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise RecipeError(f"frames must have shape (T, H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise RecipeError(f"frames must be uint8 RGB, got dtype {arr.dtype}", hint="convert with np.clip(x, 0, 255)")
    if arr.shape[0] < 1:
        raise RecipeError("frames is empty: a clip needs at least one frame")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise RecipeError(f"frames are too small to encode: {arr.shape[2]}x{arr.shape[1]} (need at least 2x2)")
    if isinstance(fps, bool) or not isinstance(fps, int | float | Fraction) or not math.isfinite(fps) or fps <= 0:
        raise RecipeError(f"fps must be a positive number, got {fps!r}")
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    codec = h264_encoder()
    height, width = arr.shape[1:3]
    if codec == "mpeg4" and (height % 2 or width % 2):
        arr = np.pad(arr, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        height, width = arr.shape[1:3]
    even = height % 2 == 0 and width % 2 == 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
            stream.codec_context.thread_count = 1
            if codec == "libx264":
                # With x264's macroblock-tree rate control the same frames sometimes encoded to different bytes from
                # run to run (seen at 112x112); without it the output is repeatable.
                stream.options = {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"}
            elif codec == "mpeg4":
                stream.options = {"qscale": "3"}
            for index, image in enumerate(arr):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------------------------------------------------
# Many clips
# --------------------------------------------------------------------------------------------------------------------


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of clip ``index`` of a set made with ``seed`` (independent of worker count)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1, int(index)]))


def plan_clips(cfg: SynthConfig) -> list[tuple[str, str]]:
    """(scene, violation) for each clip index: ``round(n * plausible_fraction)`` plausible clips spread over the
    scenes, the rest spread evenly over the violations (each over the scenes it applies to), in shuffled order."""
    cfg.validate()
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 0]))
    scenes = cfg.selected_scenes()
    violations = cfg.selected_violations()
    n_plain = int(round(cfg.n * float(cfg.plausible_fraction)))
    plan: list[tuple[str, str]] = []
    scene_order = [scenes[int(i)] for i in rng.permutation(len(scenes))]
    plan += [(scene_order[i % len(scene_order)], "none") for i in range(n_plain)]
    usable = [v for v in violations if any(s in VIOLATIONS[v].scenes for s in scenes)]
    per_violation = {
        v: [s for s in (scenes[int(i)] for i in rng.permutation(len(scenes))) if s in VIOLATIONS[v].scenes]
        for v in usable
    }
    used: Counter[str] = Counter()
    order: list[str] = []
    for i in range(cfg.n - n_plain):
        if i % len(usable) == 0:
            order = [usable[int(j)] for j in rng.permutation(len(usable))]
        v = order[i % len(usable)]
        options = per_violation[v]
        plan.append((options[used[v] % len(options)], v))
        used[v] += 1
    return [plan[int(i)] for i in rng.permutation(len(plan))]


@dataclass(frozen=True)
class _Job:
    index: int
    clip_id: str
    scene: str
    violation: str
    path: str
    seed: int
    width: int
    height: int
    frames: int
    fps: int
    style: str


def _run_job(job: _Job) -> dict[str, Any]:
    cfg = SynthConfig(
        n=1, seed=job.seed, style=job.style, width=job.width, height=job.height, frames=job.frames, fps=job.fps
    )
    frames, fields = render_clip(job.scene, job.violation, clip_rng(job.seed, job.index), cfg)
    write_clip(frames, job.path, job.fps)
    record = {"video_url": job.path, **fields, "seed": job.seed}
    return {column: record[column] for column in RECORD_COLUMNS}


def _workers(requested: int, n: int) -> int:
    if requested == 0:
        try:
            requested = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            requested = os.cpu_count() or 1
    return max(1, min(requested, n))


def _features() -> datasets.Features:
    import datasets

    types = {c: "int64" for c in _INT_COLUMNS} | {c: "bool" for c in _BOOL_COLUMNS}
    return datasets.Features({c: datasets.Value(types.get(c, "string")) for c in RECORD_COLUMNS})


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_manifest(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(RECORD_COLUMNS))
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_dataset(dataset_dir: Path, records: list[dict[str, Any]]) -> None:
    import datasets

    tmp = dataset_dir.with_name(f".{dataset_dir.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        columns = {c: [r[c] for r in records] for c in RECORD_COLUMNS}
        datasets.Dataset.from_dict(columns, features=_features()).save_to_disk(str(tmp))
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    if dataset_dir.exists():
        shutil.rmtree(dataset_dir)
    os.replace(tmp, dataset_dir)


def generate_clips(cfg: SynthConfig) -> SynthResult:
    """Render ``cfg.n`` clips into ``cfg.out_dir``: ``videos/<id>.mp4``, ``dataset/``, ``manifest.csv`` and
    ``summary.json``. Clips of earlier runs in ``videos/`` that this run does not produce are removed."""
    cfg.validate()
    start = time.perf_counter()
    out_dir = Path(cfg.out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir is a file, not a folder: {out_dir}")
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    plan = plan_clips(cfg)
    width = max(4, len(str(cfg.n - 1)))
    jobs = []
    for index, (scene, violation) in enumerate(plan):
        clip_id = f"s{index:0{width}d}_{scene}_{violation}"
        jobs.append(
            _Job(
                index, clip_id, scene, violation, str(videos / f"{clip_id}.mp4"),
                int(cfg.seed), int(cfg.width), int(cfg.height), int(cfg.frames), int(cfg.fps), str(cfg.style),
            )
        )  # fmt: skip
    workers = _workers(int(cfg.workers), len(jobs))
    if workers == 1:
        records = [_run_job(job) for job in jobs]
    else:
        import multiprocessing

        chunk = max(1, len(jobs) // (workers * 8))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            records = list(pool.map(_run_job, jobs, chunksize=chunk))

    keep = {f"{job.clip_id}.mp4" for job in jobs}
    for stale in videos.iterdir():
        if (_ID_RE.match(stale.name) and stale.name not in keep) or (
            stale.name.startswith(".s") and stale.name.endswith(".tmp")
        ):
            stale.unlink()

    dataset_dir = out_dir / "dataset"
    manifest = out_dir / "manifest.csv"
    _save_dataset(dataset_dir, records)
    _write_manifest(manifest, records)
    by_violation = Counter(r["violation"] for r in records)
    by_pc = Counter(int(r["pc"]) for r in records)
    from recipe_lib.config import to_dict

    result = SynthResult(
        out_dir=out_dir,
        dataset_dir=dataset_dir,
        manifest_csv=manifest,
        n_clips=len(records),
        counts_by_violation={v: by_violation[v] for v in ("none", *VIOLATIONS) if by_violation[v]},
        counts_by_pc={pc: by_pc[pc] for pc in sorted(by_pc)},
        codec=h264_encoder(),
        elapsed_s=time.perf_counter() - start,
        config=to_dict(cfg),
    )
    result.save(out_dir / "summary.json")
    return result


def load_synthetic(out_dir: str | Path) -> datasets.Dataset:
    """The dataset written by :func:`generate_clips` (pass its ``out_dir`` or the ``dataset`` folder itself).

    ``video_url`` points at the clips in the folder's own ``videos/`` (so a moved or copied folder still works).
    """
    import datasets

    root = Path(out_dir).expanduser().resolve()
    if (root / "dataset" / "dataset_info.json").is_file():
        dataset_dir = root / "dataset"
    elif (root / "dataset_info.json").is_file():
        dataset_dir, root = root, root.parent
    else:
        raise DataError(
            f"no synthetic dataset in {root}",
            hint=f"generate one with `plausibility synth --out {root}`",
        )
    try:
        ds = datasets.load_from_disk(str(dataset_dir))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the synthetic dataset in {dataset_dir}: {exc}") from exc
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"{dataset_dir} holds a DatasetDict, expected a single synthetic dataset")
    missing = [c for c in RECORD_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{dataset_dir} is not a synthetic dataset: missing columns {', '.join(missing)}")
    if len(ds):
        stored = Path(ds[0]["video_url"])
        local = root / "videos" / stored.name
        if local.is_file() and local != stored:
            videos = root / "videos"
            urls = [str(videos / Path(url).name) for url in ds["video_url"]]
            order = ds.column_names
            ds = ds.remove_columns("video_url").add_column("video_url", urls, feature=ds.features["video_url"])
            ds = ds.select_columns(order)
        elif not stored.is_file():
            raise DataError(
                f"the clips of {dataset_dir} are missing (looked for {stored} and {local})",
                hint="regenerate the set with `plausibility synth`",
            )
    return ds
