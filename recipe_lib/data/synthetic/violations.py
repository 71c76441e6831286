"""Violations as changes to the simulation: one function per violation, found by name in a registry.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from recipe_lib.data.synthetic.physics import _Body, _Event, _Run, _Setup, _State
from recipe_lib.data.synthetic.scenes import _in_frame
from recipe_lib.data.synthetic.spec import MIN_VISIBLE_FRAMES, VIOLATIONS
from recipe_lib.errors import RecipeError

# --------------------------------------------------------------------------------------------------------------------
# Violations as changes to the simulation
# --------------------------------------------------------------------------------------------------------------------


def _airborne(setup: _Setup, s: _State) -> bool:
    return s.y + s.hh < setup.floor_y - 0.1 * setup.height


def _speed(s: _State) -> float:
    return math.hypot(s.vx, s.vy)


@dataclasses.dataclass
class Draw:
    """What a violation function works with: a private copy of the scene's setup (to alter), the plain run of the
    scene (to choose when the violation starts) and the clip's random stream."""

    setup: _Setup
    plain: _Run
    rng: np.random.Generator

    @property
    def p(self) -> int:
        return self.setup.primary

    @property
    def states(self) -> list[list[_State]]:
        return self.plain.states

    @property
    def window(self) -> list[int]:
        """Event frames that leave room to show the violation."""
        return list(range(1, self.setup.frames - MIN_VISIBLE_FRAMES))

    def pick(self, frames_ok: list[int]) -> int | None:
        return int(frames_ok[int(self.rng.integers(len(frames_ok)))]) if frames_ok else None

    def at(self, k: int, fn: Callable[[list[_Body]], None]) -> list[_Event]:
        return [(k / self.setup.fps, fn)]


# One function per violation: the altered setup and events, or None when this draw of the scene cannot show it.
Violation = Callable[[Draw], tuple[_Setup, list[_Event]] | None]
VIOLATION_FUNCTIONS: dict[str, Violation] = {}


def violation(name: str) -> Callable[[Violation], Violation]:
    """Register the function that makes violation ``name`` (its spec is ``VIOLATIONS[name]``)."""

    def register(fn: Violation) -> Violation:
        VIOLATION_FUNCTIONS[name] = fn
        return fn

    return register


def _gravity_frame(d: Draw) -> int | None:
    if d.setup.scene == "slide_friction":
        return d.pick(d.window)
    return d.pick([k for k in d.window if _airborne(d.setup, d.states[k][d.p])])


@violation("hover")
def hover(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    k = _gravity_frame(d)
    if k is None:
        return None
    p = d.p

    def freeze(bodies: list[_Body]) -> None:
        bodies[p].frozen = True
        bodies[p].vx = bodies[p].vy = 0.0

    return d.setup, d.at(k, freeze)


@violation("upward_acceleration")
def upward_acceleration(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    k = _gravity_frame(d)
    if k is None:
        return None
    p = d.p
    lift = float(d.rng.uniform(1.5, 2.5))

    def reverse(bodies: list[_Body]) -> None:
        bodies[p].gravity = -lift

    return d.setup, d.at(k, reverse)


@violation("size_change")
def size_change(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    k = d.pick(d.window)
    if k is None:
        return None
    rng = d.rng
    factor = float(rng.uniform(1.4, 1.75)) if rng.random() < 0.5 else float(rng.uniform(0.5, 0.68))
    ramp = float(rng.uniform(3.0, 5.0)) / d.setup.fps
    t = d.setup.target

    def resize(bodies: list[_Body]) -> None:
        bodies[t].scale_target = factor
        bodies[t].scale_speed = abs(factor - 1.0) / ramp

    return d.setup, d.at(k, resize)


@violation("energy_gain")
def energy_gain(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    setup, p, rng = d.setup, d.p, d.rng
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
    v0 = _speed(d.states[0][p])
    k = d.pick([k for k in d.window if _speed(d.states[k][p]) >= 0.4 * v0])
    if k is None:
        return None
    push = setup.bodies[p].friction * float(rng.uniform(0.6, 1.2))

    def accelerate(bodies: list[_Body]) -> None:
        bodies[p].friction = -push

    return setup, d.at(k, accelerate)


@violation("no_momentum_transfer")
def no_momentum_transfer(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    d.setup.bodies[d.p].ghost = True
    return d.setup, []


@violation("sudden_stop")
def sudden_stop(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    setup, p, states, plain = d.setup, d.p, d.states, d.plain
    fps = setup.fps
    top_speed = max(_speed(f[p]) for f in states)
    ok = [k for k in d.window if _speed(states[k][p]) >= 0.4 * top_speed]
    if setup.scene == "projectile":
        ok = [k for k in ok if _airborne(setup, states[k][p])]
    elif setup.scene == "collision":
        if not plain.log.pair_hits:
            return None
        ok = [k for k in ok if k / fps < plain.log.pair_hits[0][0] - 1.5 / fps]
    elif setup.scene == "wall_rebound":
        hits = [t for t, _ in plain.log.wall_hits]
        ok = [k for k in ok if all(abs(k / fps - t) > 1.5 / fps for t in hits)]
    k = d.pick(ok)
    if k is None:
        return None
    horizontal_only = setup.scene == "projectile"

    def stop(bodies: list[_Body]) -> None:
        bodies[p].vx = 0.0
        if not horizontal_only:
            bodies[p].vy = 0.0

    return setup, d.at(k, stop)


@violation("effect_before_cause")
def effect_before_cause(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    setup, plain, p = d.setup, d.plain, d.p
    frames, fps = setup.frames, setup.fps
    if not plain.log.pair_hits:
        return None
    t_hit, i, j, ivx, ivy, jvx, jvy = plain.log.pair_hits[0]
    after = {i: (ivx, ivy), j: (jvx, jvy)}
    struck, striker = 1 - p, p
    lead = max(1.5 / fps, float(d.rng.uniform(0.15, 0.3)) * (frames - 1) / fps)
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


@violation("penetration")
def penetration(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    setup, p, rng = d.setup, d.p, d.rng
    body = setup.bodies[p]
    if setup.scene == "wall_rebound":
        body.pass_walls = True
        return setup, []
    if setup.scene == "slide_friction":
        k = d.pick(d.window)
        if k is None:
            return None
        depth = 2 * body.hh * float(rng.uniform(0.6, 0.9))
        speed = depth / (float(rng.uniform(3.0, 5.0)) / setup.fps)

        def sink(bodies: list[_Body]) -> None:
            bodies[p].sink_speed, bodies[p].sink_max = speed, depth

        return setup, d.at(k, sink)
    body.floor_depth = body.hh * float(rng.uniform(1.0, 1.7))
    body.stick = True
    return setup, []


def _visible_frame(d: Draw) -> int | None:
    t = d.setup.target
    return d.pick([k for k in d.window if d.states[k][t].visible and _in_frame(d.setup, d.states[k][t])])


@violation("vanish")
def vanish(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    k = _visible_frame(d)
    if k is None:
        return None
    t = d.setup.target

    def hide(bodies: list[_Body]) -> None:
        bodies[t].visible = False
        bodies[t].ghost = True

    return d.setup, d.at(k, hide)


@violation("teleport")
def teleport(d: Draw) -> tuple[_Setup, list[_Event]] | None:
    k = _visible_frame(d)
    if k is None:
        return None
    t = d.setup.target
    shift = _teleport_shift(d.setup, d.states[k], t, d.rng)
    if shift is None:
        return None

    def jump(bodies: list[_Body]) -> None:
        bodies[t].x += shift

    return d.setup, d.at(k, jump)


def apply_violation(
    name: str, setup: _Setup, plain: _Run, rng: np.random.Generator
) -> tuple[_Setup, list[_Event]] | None:
    """The altered setup and events for violation ``name`` (on a copy of ``setup``), or None when this draw of the
    scene cannot show it."""
    fn = VIOLATION_FUNCTIONS.get(name)
    if fn is None:  # pragma: no cover - names are checked against VIOLATIONS when the config is made
        raise RecipeError(f"unknown violation {name!r}; valid violations: {', '.join(VIOLATIONS)}")
    setup = dataclasses.replace(setup, bodies=[dataclasses.replace(b) for b in setup.bodies])
    return fn(Draw(setup, plain, rng))


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
