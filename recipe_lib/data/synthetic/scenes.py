"""The six scenes: initial conditions drawn from a clip's random stream, and whether a draw shows its event.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recipe_lib.data.synthetic.looks import _Look
from recipe_lib.data.synthetic.physics import _Body, _Run, _Setup, _State
from recipe_lib.data.synthetic.spec import MIN_VISIBLE_FRAMES, SCENES
from recipe_lib.errors import RecipeError

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
