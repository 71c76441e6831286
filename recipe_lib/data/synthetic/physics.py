"""The 2-D simulator: bodies, contacts with restitution and friction, ball-ball impulses, event hooks.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from recipe_lib.data.synthetic.looks import RGB

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
