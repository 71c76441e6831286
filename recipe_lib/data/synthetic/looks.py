"""How a clip looks (colours, sizes, render style) and the captions that describe it.

Part of :mod:`recipe_lib.data.synthetic` (see its docstring for the clips and their labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
