"""A procedural image world: shapes with colours, patterns and sizes on varied backgrounds.

Every scene is drawn from a seed, so the world needs no files: the same
`(seed, index)` always gives the same picture, caption and questions. A toy
backbone is pretrained on this world (see `yochameleon.toyworld.pretrain`) so
that personalizing a concept on top of it has something to build on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond")
COLOURS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (40, 170, 60),
    "blue": (40, 90, 230), "purple": (140, 60, 190), "pink": (245, 130, 190), "white": (245, 245, 245),
}
PATTERNS = ("solid", "striped", "dotted")
SIZES = ("small", "large")
POSITIONS = ("left", "middle", "right")
BACKGROUNDS = {"grey": (128, 128, 128), "black": (20, 20, 24), "brown": (110, 75, 45), "teal": (30, 110, 110)}
SIZE_PX = {"small": 26, "large": 38}
POSITION_X = {"left": 0.25, "middle": 0.5, "right": 0.75}
ATTRIBUTES = ("shape", "colour", "pattern")  # what identifies an object (a concept is one such triple)
ATTRIBUTE_VALUES = {"shape": SHAPES, "colour": tuple(COLOURS), "pattern": PATTERNS}  # in ATTRIBUTES order


@dataclass(frozen=True)
class Thing:
    """One object: what it is (shape, colour, pattern, size) and where it is drawn."""

    shape: str
    colour: str
    pattern: str
    size: str = "large"
    position: str = "middle"
    dy: float = 0.0  # vertical offset as a fraction of the image (-0.12..0.12)

    @property
    def noun(self) -> str:
        """`a large orange striped heart`."""
        return f"a {self.size} {self.colour} {self.pattern} {self.shape}"

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.pattern)

    def short(self) -> str:
        """`an orange striped heart` (no size): how a concept is described."""
        return f"{'an' if self.colour == 'orange' else 'a'} {self.colour} {self.pattern} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """One picture: one or two things on a background."""

    things: tuple[Thing, ...]
    background: str
    texture: int  # seed of the background's noise and gradient

    def caption(self) -> str:
        """`A large orange striped heart on the left and a small blue solid star on the right, on grey.`"""
        parts = [f"{t.noun} on the {t.position}" if len(self.things) > 1 else t.noun for t in self.things]
        text = " and ".join(parts)
        return f"{text[0].upper()}{text[1:]}, on {self.background}."


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    import math

    if shape == "square":
        r *= 0.85
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        points = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return points
    if shape == "heart":
        points = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((cx + x * r / 17, cy - y * r / 17 - r * 0.1))
        return points
    return None  # circle


def _mask(thing: Thing, side: int, scale: int) -> Image.Image:
    """The thing's silhouette at `scale` x resolution (L mode)."""
    big = side * scale
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    r = SIZE_PX[thing.size] / 2 * side / 64 * scale
    cx = POSITION_X[thing.position] * big
    cy = (0.5 + thing.dy) * big
    poly = _polygon(thing.shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def _fill(thing: Thing, side: int, scale: int) -> Image.Image:
    """The thing's colour with its pattern, over the whole canvas."""
    big = side * scale
    base = COLOURS[thing.colour]
    dark = tuple(int(c * 0.35) for c in base) if thing.colour != "white" else (90, 90, 90)
    layer = Image.new("RGB", (big, big), base)
    draw = ImageDraw.Draw(layer)
    unit = max(1, side // 64) * scale
    if thing.pattern == "striped":
        for x in range(0, big, 8 * unit):
            draw.rectangle([x, 0, x + 4 * unit - 1, big], fill=dark)
    elif thing.pattern == "dotted":
        for y in range(0, big, 9 * unit):
            for x in range((y // (9 * unit)) % 2 * 4 * unit, big, 9 * unit):
                draw.ellipse([x, y, x + 4 * unit, y + 4 * unit], fill=dark)
    return layer


def render(scene: Scene, side: int = 64, scale: int = 4) -> Image.Image:
    """Draw a scene (anti-aliased by drawing at `scale` x and downsampling)."""
    rng = random.Random(scene.texture)
    big = side * scale
    base = BACKGROUNDS[scene.background]
    # A soft vertical gradient plus a little blotchy noise, so backgrounds vary but stay plain.
    top = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    bottom = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
    image = Image.linear_gradient("L").resize((big, big))
    image = Image.composite(Image.new("RGB", (big, big), bottom), Image.new("RGB", (big, big), top), image)
    cells = bytes(max(0, min(255, int(rng.gauss(128, 40)))) for _ in range(64))  # seeded, unlike effect_noise
    noise = Image.frombytes("L", (8, 8), cells).resize((big, big), Image.BILINEAR)
    image = Image.blend(image, Image.merge("RGB", [noise] * 3), 0.05)
    for thing in scene.things:
        image.paste(_fill(thing, side, scale), (0, 0), _mask(thing, side, scale))
    return image.resize((side, side), Image.LANCZOS)


def object_mask(scene: Scene, side: int = 64):
    """(side, side) float array in [0, 1]: where the scene's things are drawn."""
    import numpy as np

    mask = np.zeros((side, side), np.float32)
    for thing in scene.things:
        mask = np.maximum(mask, np.asarray(_mask(thing, side, 1), np.float32) / 255)
    return mask


def random_thing(rng: random.Random, position: str | None = None) -> Thing:
    """A thing with uniformly drawn attributes."""
    return Thing(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(PATTERNS), rng.choice(SIZES),
                 position or rng.choice(POSITIONS), rng.uniform(-0.12, 0.12))


def random_scene(rng: random.Random, two_things: float = 0.3, must_include: Thing | None = None) -> Scene:
    """A scene with one thing, or two (left and right) with probability `two_things`.

    `must_include` places that thing's identity (shape, colour, pattern) in the scene, at a
    random position and size.
    """
    if rng.random() < two_things:
        # Two things are both small, so they never overlap.
        first, second = replace(random_thing(rng, "left"), size="small"), replace(random_thing(rng, "right"), size="small")
        while second.identity == first.identity:
            second = replace(random_thing(rng, "right"), size="small")
        things = [first, second]
    else:
        things = [random_thing(rng)]
    if must_include is not None:
        slot = rng.randrange(len(things))
        things[slot] = replace(must_include, size=things[slot].size, position=things[slot].position,
                               dy=things[slot].dy)
        if len(things) == 2 and things[0].identity == things[1].identity:
            things = [things[slot]]
    return Scene(tuple(things), rng.choice(list(BACKGROUNDS)), rng.randrange(1 << 30))


def scene(seed: int, index: int, **kwargs) -> Scene:
    """Scene number `index` of the world drawn from `seed` (deterministic)."""
    return random_scene(random.Random(seed * 1_000_003 + index), **kwargs)


# ---- questions ------------------------------------------------------------------------------
def attribute_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """Visual questions about a scene with short answers ("orange", "Yes", ...)."""
    qa = []
    for thing in scene.things:
        qa.append((f"What colour is the {thing.shape}?", thing.colour))
        qa.append((f"What pattern does the {thing.shape} have?", thing.pattern))
        qa.append((f"What shape is the {thing.colour} {thing.pattern} thing?", thing.shape))
    there = rng.choice(scene.things)
    qa.append((f"Is there {there.short()}?", "Yes"))
    other = there
    while any(t.identity == other.identity for t in scene.things):
        other = _mutate(there, rng)
    qa.append((f"Is there {other.short()}?", "No"))
    return qa


def _mutate(thing: Thing, rng: random.Random, keep: int = 2) -> Thing:
    """The same thing with `3 - keep` of shape / colour / pattern changed (a look-alike when keep=2)."""
    changed = rng.sample(ATTRIBUTES, 3 - keep)
    return replace(thing, **{a: other_value(a, getattr(thing, a), rng) for a in changed})


def other_value(attribute: str, value: str, rng: random.Random) -> str:
    """A value of `attribute` other than `value`, uniformly."""
    return rng.choice([v for v in ATTRIBUTE_VALUES[attribute] if v != value])


def look_alike(thing: Thing, rng: random.Random, keep: int = 2) -> Thing:
    """A different thing sharing `keep` of the three identifying attributes."""
    return _mutate(thing, rng, keep)


CONCEPT_QUESTIONS = {  # text-only questions about a concept and how its attribute answers them
    "colour": ("What colour is <sks>?", "<sks> is {colour}."),
    "pattern": ("What pattern does <sks> have?", "<sks> is {pattern}."),
    "shape": ("What shape is <sks>?", "<sks> is a {shape}."),
}
