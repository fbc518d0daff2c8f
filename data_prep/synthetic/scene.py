"""Scenes of the synthetic world: coloured shapes and rendered words on a background, with exact geometry.

A scene is sampled from a ``random.Random`` and fully describes an image; rendering and all ground truth
derive from it, so they cannot disagree.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from PIL import Image, ImageFont

# name -> (RGB, Chinese name)
COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red": ((220, 30, 30), "红色"),
    "green": ((30, 170, 50), "绿色"),
    "blue": ((30, 70, 220), "蓝色"),
    "yellow": ((245, 215, 20), "黄色"),
    "orange": ((245, 130, 20), "橙色"),
    "purple": ((140, 40, 170), "紫色"),
    "pink": ((250, 120, 190), "粉色"),
    "white": ((255, 255, 255), "白色"),
    "black": ((10, 10, 10), "黑色"),
}
SHAPES: dict[str, str] = {
    "circle": "圆形",
    "square": "正方形",
    "triangle": "三角形",
    "star": "星形",
    "diamond": "菱形",
    "hexagon": "六边形",
    "cross": "十字形",
}
# name -> (fraction of the image's shorter side, Chinese name)
SIZES: dict[str, tuple[tuple[float, float], str]] = {
    "small": ((0.12, 0.17), "小"),
    "medium": ((0.21, 0.27), "中等大小的"),
    "large": ((0.32, 0.40), "大"),
}
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], str]] = {
    "light grey": ((200, 200, 200), "浅灰色"),
    "dark grey": ((75, 75, 75), "深灰色"),
    "beige": ((225, 210, 180), "米色"),
}
BACKGROUND_KINDS = ("plain", "gradient", "striped", "noisy")
# Colours too close to a background to be told apart reliably.
LOW_CONTRAST = {("white", "light grey"), ("white", "beige"), ("black", "dark grey"), ("yellow", "beige")}
WORDS = (
    "HELLO", "OPEN", "STOP", "SALE", "CAFE", "TAXI", "EXIT", "PARK", "BOOK", "MILK", "RAIN", "STAR",
    "WORLD", "QUEEN", "PIZZA", "MUSIC", "HOTEL", "BANK", "ZOO", "LAMP", "TRAIN", "RIVER", "APPLE", "NORTH",
)  # fmt: skip
COMMON_ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 5 / 4, 2.0)
TEXT_PAD = 2  # pixels around a word in its text layer, before the layer is rotated


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no system fonts needed


def text_box(text: str, size: int) -> tuple[int, int, int, int]:
    """Ink box of ``text`` drawn at (0, 0): x1, y1, x2, y2."""
    x1, y1, x2, y2 = font(size).getbbox(text)
    return math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)


def rotated_size(w: int, h: int, angle: float) -> tuple[int, int]:
    """Size of a w x h layer after ``rotate(angle, expand=True)``, as PIL rounds it."""
    return Image.new("L", (w, h)).rotate(angle, expand=True).size


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # pixels, x1 y1 x2 y2, x2/y2 exclusive

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass
class Word:
    text: str
    colour: str
    font_size: int
    angle: float  # degrees, counter-clockwise
    origin: tuple[int, int]  # top-left of the rotated text layer in the image
    # pixels, corners of the ink box: top-left, top-right, bottom-right, bottom-left
    quad: list[tuple[float, float]]


@dataclass
class Scene:
    width: int
    height: int
    background: str
    background_kind: str
    objects: list[Obj] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    texture_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def sample_size(rng: random.Random, kind: str) -> tuple[int, int]:
    """Image size for a clean sample, or for the 'aspect' / 'small' noise kinds."""
    if kind == "aspect":
        short = rng.randint(100, 200)
        long = int(short * rng.uniform(3.5, 6.0))
    elif kind == "small":
        long = rng.randint(24, 80)
        short = max(12, int(long / rng.choice(COMMON_ASPECTS)))
    else:
        short = rng.randint(200, 480)
        long = max(short, int(short * rng.choice(COMMON_ASPECTS) * rng.uniform(0.95, 1.05)))
    return (long, short) if rng.random() < 0.6 else (short, long)


def sample_scene(
    rng: random.Random, size_kind: str = "clean", word_rate: float = 0.3, max_objects: int = 4
) -> Scene:
    width, height = sample_size(rng, size_kind)
    background = rng.choice(list(BACKGROUNDS))
    scene = Scene(width, height, background, rng.choice(BACKGROUND_KINDS), texture_seed=rng.getrandbits(31))
    taken: list[tuple[float, float, float, float]] = []
    _place_objects(rng, scene, rng.randint(1, max_objects), taken)
    if size_kind != "small" and rng.random() < word_rate:
        for _ in range(rng.choice((1, 1, 2))):
            word = _place_word(rng, scene, taken)
            if word is not None:
                scene.words.append(word)
    return scene


def _place_objects(rng: random.Random, scene: Scene, count: int, taken: list) -> None:
    """Up to ``count`` non-overlapping objects; the first always fits (sides are at most 0.4 of the
    shorter image side), later ones are skipped when no free spot is found."""
    short = min(scene.width, scene.height)
    colours = [c for c in COLOURS if (c, scene.background) not in LOW_CONTRAST]
    used: set[tuple[str, str]] = set()
    for _ in range(count):
        # (colour, shape) pairs are unique in a scene, so "the red circle" always refers to one object.
        colour, shape = rng.choice([(c, s) for c in colours for s in SHAPES if (c, s) not in used])
        size = rng.choice(list(SIZES))
        lo, hi = SIZES[size][0]
        side = max(4, int(short * rng.uniform(lo, hi)))
        box = _free_box(rng, scene, side, side, taken)
        if box is None:
            continue
        used.add((colour, shape))
        taken.append(box)
        scene.objects.append(Obj(shape, colour, size, tuple(int(v) for v in box)))


def _free_box(rng: random.Random, scene: Scene, w: float, h: float, taken: list, tries: int = 50):
    margin = max(2, int(0.02 * min(scene.width, scene.height)))
    if w + 2 * margin > scene.width or h + 2 * margin > scene.height:
        return None
    for _ in range(tries):
        x1 = rng.uniform(margin, scene.width - w - margin)
        y1 = rng.uniform(margin, scene.height - h - margin)
        box = (x1, y1, x1 + w, y1 + h)
        if all(not _overlap(box, other, margin) for other in taken):
            return box
    return None


def _overlap(a, b, pad: float) -> bool:
    return not (a[2] + pad <= b[0] or b[2] + pad <= a[0] or a[3] + pad <= b[1] or b[3] + pad <= a[1])


def _place_word(rng: random.Random, scene: Scene, taken: list) -> Word | None:
    text = rng.choice(WORDS)
    font_size = max(12, int(min(scene.width, scene.height) * rng.uniform(0.08, 0.13)))
    angle = rng.uniform(-15.0, 15.0)
    x1, y1, tw, th = text_box(text, font_size)
    pad = TEXT_PAD
    lw, lh = tw + 2 * pad, th + 2 * pad  # the text layer, drawn at (pad, pad), then rotated
    bw, bh = rotated_size(lw, lh, angle)
    box = _free_box(rng, scene, bw, bh, taken)
    if box is None:
        return None
    taken.append(box)
    origin = (int(box[0]), int(box[1]))
    colours = [c for c in ("black", "white", "red", "blue") if (c, scene.background) not in LOW_CONTRAST]
    # the ink box, grown by the one pixel that antialiased rotation spreads
    a, b, c, d = pad + x1 - 1, pad + y1 - 1, pad + tw + 1, pad + th + 1
    corners = [(a, b), (c, b), (c, d), (a, d)]
    quad = [_rotate_into(p, (lw, lh), (bw, bh), angle, origin) for p in corners]
    return Word(text, rng.choice(colours), font_size, angle, origin, quad)


def _rotate_into(p, size, rotated, angle: float, origin) -> tuple[float, float]:
    """Where point p of a layer lands after rotating the layer by ``angle`` (about its centre, expanding
    to ``rotated``) and pasting it at ``origin``."""
    (w, h), (nw, nh) = size, rotated
    rad = math.radians(angle)
    dx, dy = p[0] - w / 2, p[1] - h / 2
    # counter-clockwise on screen, with y pointing down
    x = dx * math.cos(rad) + dy * math.sin(rad)
    y = -dx * math.sin(rad) + dy * math.cos(rad)
    return origin[0] + nw / 2 + x, origin[1] + nh / 2 + y


def normalise_box(box, width: int, height: int) -> list[int]:
    """Pixel box -> integers in [0, 1000), the recipe's coordinate space."""
    x1, y1, x2, y2 = box
    return [_norm(x1, width), _norm(y1, height), _norm(x2, width), _norm(y2, height)]


def normalise_points(points, width: int, height: int) -> list[list[int]]:
    return [[_norm(x, width), _norm(y, height)] for x, y in points]


def _norm(v: float, extent: int) -> int:
    return min(999, max(0, int(v / extent * 1000)))
