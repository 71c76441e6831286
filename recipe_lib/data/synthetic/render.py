"""Drawing the simulated states into frames, and one whole clip (plausible twin, violation, onset).

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recipe_lib.data.synthetic.looks import _captions, _Look, _sample_look
from recipe_lib.data.synthetic.physics import _Body, _Run, _Setup, _simulate, _State
from recipe_lib.data.synthetic.scenes import _build_scene, _scene_ok
from recipe_lib.data.synthetic.spec import (
    _SCENE_ACTION,
    MIN_FRAMES,
    MIN_SIZE,
    MODEL_NAME,
    VIOLATIONS,
    SynthConfig,
    _check_int,
    _check_scene,
    _description,
    _rule,
    is_hard,
    pc_score,
    scene_rules,
)
from recipe_lib.data.synthetic.violations import _onset, _shows, apply_violation
from recipe_lib.errors import ConfigError, RecipeError

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
        changed = apply_violation(violation, setup, plain, rng)
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
