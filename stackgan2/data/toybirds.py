"""toy-birds: the built-in dataset of procedurally drawn, CUB-like birds with captions.

Each picture shows one bird whose attributes are known exactly: body and wing colour (ten named
colours each; the class id is the pair, 100 classes), size, beak length and colour, tail shape,
wing pattern, pose (perched on a branch or flying) and background (sky, foliage or ground). Ten
captions per image, in the style of the CUB annotations, are built from the attributes with
synonyms and varied word order. Split sizes default to CUB's (8,855 train / 2,933 test).

Framing (``data.toy_framing``): "scene" draws the bird where it sits in a big scene, a few tens of pixels
long at 64 px; "bird" frames it as StackGAN crops every CUB image around its bird (the box centred, the
square of half-side 0.75 * max(w, h) filling the picture; see ``_bird_view``). Both framings draw the
same bird, branch, colours and background for an index (only the per-pixel grain differs), and give it
the same captions.

Determinism: image ``index`` of a split is a pure function of (seed, split, index, render size, framing).
Its randomness comes from ``np.random.default_rng([seed, split, index, stream])`` (uniform draws
only), and it is drawn with numpy arithmetic only (+ - * /, sqrt, floor, comparisons; trigonometry
is done once per angle in Python and quantised), so the bytes are the same on every machine and
for every number of worker processes. Shapes are rasterised at twice the output resolution and
box-filtered down, which anti-aliases every edge.

The rendered images are cached as one uint8 store per split (see ``storage``) under a key holding
every input plus ``RENDERER_VERSION``: bump it whenever a change here alters any pixel or caption.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stackgan2.config import DataConfig, ToyFraming
from stackgan2.data.source import DatasetParts
from stackgan2.data.storage import build_image_store, cache_root, open_image_store
from stackgan2.progress import ProgressFn

RENDERER_VERSION = 2  # 2: data.toy_framing (scene draws the pixels of version 1, byte for byte)
SPLIT_IDS = {"train": 0, "test": 1}
CAPTIONS_PER_IMAGE = 10

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (206, 34, 38),
    "orange": (240, 132, 26),
    "yellow": (246, 214, 44),
    "green": (46, 156, 60),
    "blue": (40, 90, 214),
    "purple": (128, 54, 170),
    "brown": (124, 78, 42),
    "black": (30, 30, 33),
    "white": (242, 242, 238),
    "grey": (138, 138, 144),
}
BEAK_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "yellow": (240, 200, 40),
    "orange": (234, 118, 28),
    "grey": (156, 156, 160),
    "red": (200, 36, 40),
}
ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "body_color": list(COLORS),
    "wing_color": list(COLORS),
    "size": ["small", "medium", "large"],
    "beak_color": list(BEAK_COLORS),
    "beak_length": ["short", "medium", "long"],
    "tail": ["short", "long", "forked", "fanned"],
    "wing_pattern": ["plain", "bars", "spots"],
    "pose": ["perched", "flying"],
    "background": ["sky", "foliage", "ground"],
}
NUM_CLASSES = len(COLORS) ** 2


def class_id(body_color: Any, wing_color: Any) -> Any:
    """The class of (body colour, wing colour) codes, ints or arrays: body * 10 + wing."""
    return body_color * len(COLORS) + wing_color


def _rng(seed: int, split_id: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, split_id, index, stream])


def sample_attributes(seed: int, split_id: int, index: int) -> dict[str, int]:
    """The attribute codes of one image (indices into ``ATTRIBUTE_VALUES``)."""
    rng = _rng(seed, split_id, index, 0)
    codes = {name: int(rng.integers(len(values))) for name, values in ATTRIBUTE_VALUES.items()}
    codes["pose"] = int(rng.random() >= 0.62)  # perched birds are the more common sight, as in CUB
    return codes


# ----------------------------------------------------------------------------------------------
# Captions

_SIZE_WORDS = {"small": ["small", "tiny", "little"], "medium": ["medium sized", "medium-sized", "mid-sized"],
               "large": ["large", "big"]}
_COLOR_WORDS = {name: [name] for name in COLORS} | {"grey": ["grey", "gray"], "purple": ["purple", "violet"]}
_BODY_PARTS = ["body", "breast", "belly", "crown", "head", "chest", "throat"]
_WING_PARTS = ["wings", "wing feathers", "primaries and secondaries", "wing coverts"]
_BEAK_WORDS = ["beak", "bill"]
_BEAK_LENGTH_WORDS = {"short": ["short", "stubby", "small"], "medium": ["medium length", "medium-sized", "pointed"],
                      "long": ["long", "long pointed", "long thin"]}
_TAIL_WORDS = {"short": ["a short tail", "a stubby tail"], "long": ["a long tail", "long tail feathers"],
               "forked": ["a forked tail", "a split tail"], "fanned": ["a fan-shaped tail", "a wide rounded tail"]}
_POSE_WORDS = {"perched": ["perched on a branch", "sitting on a branch", "standing on a twig", "resting on a branch"],
               "flying": ["flying", "in flight", "flying with its wings spread", "soaring with open wings"]}
_BACKGROUND_WORDS = {"sky": ["in the sky", "against a blue sky", "under an open sky"],
                     "foliage": ["in front of green leaves", "among the leaves", "in a leafy tree"],
                     "ground": ["above a grassy field", "near the ground", "over a field"]}
_TEMPLATES = [
    "this {size} bird has a {body} {body_part}, {wing} {wing_part} and a {beak_length} {beak_color} {beak}",
    "a {size} {body} bird {pose}",
    "a {body} bird with {wing} {wing_part}{pattern} and a {beak_length} {beak_color} {beak}",
    "this bird is {body} with {wing} {wing_part} and {tail}",
    "the bird has a {body} {body_part} and {wing} {wing_part}, and its {beak} is {beak_color}",
    "a {size} bird with a {body} {body_part}, {wing} {wing_part} and {tail}",
    "this is a {size} {body} bird with {wing} {wing_part}, {pose}",
    "this {body_and_wing} bird has a {beak_length} {beak_color} {beak}",
    "a {body} bird {pose} {background}",
    "this bird has {wing} {wing_part}{pattern}, a {body} {body_part} and a {beak_length} {beak}",
    "the {size} bird is mostly {body} with {wing} {wing_part} and a {beak_color} {beak}",
    "a bird with a {body} {body_part}, {wing} {wing_part}{pattern} and {tail}",
    "this {size} bird is {pose} {background} and has a {body} body with {wing} wings",
    "a {size} bird {pose}, with a {body} {body_part} and a {beak_length} {beak_color} {beak}",
    "{wing} wings and a {body} {body_part} mark this {size} bird",
    "this bird has a {beak_length} {beak_color} {beak}, a {body} {body_part} and {wing} {wing_part}",
]


def _pattern_color(wing_color: str) -> str:
    return "black" if wing_color in ("white", "yellow", "grey", "orange") else "white"


def make_captions(attributes: dict[str, int], rng: np.random.Generator, count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``count`` different captions for one image, each from a different template."""
    names = {key: ATTRIBUTE_VALUES[key][code] for key, code in attributes.items()}

    def pick(options: list[str]) -> str:
        return options[int(rng.integers(len(options)))]

    captions = []
    for template in rng.permutation(len(_TEMPLATES))[:count]:
        body, wing = pick(_COLOR_WORDS[names["body_color"]]), pick(_COLOR_WORDS[names["wing_color"]])
        pattern_word = pick(_COLOR_WORDS[_pattern_color(names["wing_color"])])
        pattern = {
            "plain": "",
            "bars": f" with {pattern_word} {pick(['wing bars', 'wingbars'])}",
            "spots": f" with {pattern_word} spots",
        }[names["wing_pattern"]]
        same = names["body_color"] == names["wing_color"]
        text = _TEMPLATES[template].format(
            size=pick(_SIZE_WORDS[names["size"]]),
            body=body,
            wing=wing,
            body_and_wing=f"all {body}" if same else f"{body} and {wing}",
            body_part=pick(_BODY_PARTS),
            wing_part=pick(_WING_PARTS),
            pattern=pattern,
            beak=pick(_BEAK_WORDS),
            beak_length=pick(_BEAK_LENGTH_WORDS[names["beak_length"]]),
            beak_color=pick(_COLOR_WORDS[names["beak_color"]]),
            tail=pick(_TAIL_WORDS[names["tail"]]),
            pose=pick(_POSE_WORDS[names["pose"]]),
            background=pick(_BACKGROUND_WORDS[names["background"]]),
        )
        captions.append(re.sub(r"\ba (?=[aeiou])", "an ", text))
    return captions


# Which attribute each caption field names ({body_and_wing} names both colours; {pattern} names the
# wing pattern only when it is not plain, since plain wings leave the field empty).
_FIELD_NAMES = {"size": ("size",), "body": ("body_color",), "wing": ("wing_color",),
                "body_and_wing": ("body_color", "wing_color"), "pattern": ("wing_pattern",),
                "beak_length": ("beak_length",), "beak_color": ("beak_color",), "tail": ("tail",),
                "pose": ("pose",), "background": ("background",)}


def _alternatives(words: Any) -> str:
    flat = [w for group in (words.values() if isinstance(words, dict) else [words]) for w in group]
    return "(?:" + "|".join(re.escape(w) for w in sorted(set(flat), key=len, reverse=True)) + ")"


def _template_patterns() -> list[tuple[re.Pattern[str], list[str]]]:
    color = _alternatives(_COLOR_WORDS)
    fields = {
        "size": _alternatives(_SIZE_WORDS), "body": color, "wing": color, "beak_color": color,
        "body_and_wing": f"(?:all {color}|{color} and {color})", "body_part": _alternatives(_BODY_PARTS),
        "wing_part": _alternatives(_WING_PARTS), "beak": _alternatives(_BEAK_WORDS),
        "beak_length": _alternatives(_BEAK_LENGTH_WORDS), "tail": _alternatives(_TAIL_WORDS),
        "pose": _alternatives(_POSE_WORDS), "background": _alternatives(_BACKGROUND_WORDS),
        "pattern": f"(?: with {color} (?:wing bars|wingbars|spots))?",
    }
    patterns = []
    for template in _TEMPLATES:
        regex, named = [], []
        for i, part in enumerate(re.split(r"\{(\w+)\}", template)):
            if i % 2:
                regex.append(f"(?P<{part}>{fields[part]})")
                named.append(part)
            else:  # make_captions writes "an" before a vowel
                regex.append(re.sub(r"\ba ", "an? ", re.escape(part).replace("\\ ", " ")))
        patterns.append((re.compile("".join(regex)), named))
    return patterns


_PATTERNS = _template_patterns()


def named_attributes(caption: str) -> frozenset[str] | None:
    """The attributes a toy-birds caption states (e.g. {"size", "body_color", "pose"} for "a small red bird flying"),
    found by matching it against the caption templates; None if it comes from none of them.

    Three of the sixteen templates leave the wing colour out, as real CUB captions often do; an
    evaluation can only expect a prompted wing colour where the prompt names one."""
    for pattern, fields in _PATTERNS:
        match = pattern.fullmatch(caption)
        if match:
            return frozenset(name for field in fields if match.group(field) for name in _FIELD_NAMES.get(field, ()))
    return None


# ----------------------------------------------------------------------------------------------
# Drawing primitives (twice the output resolution)

# Part labels, in the order they are usually painted; 0 is "nothing drawn here".
BRANCH, LEAF, LEG, FAR_WING, TAIL, BODY, BELLY, WING, FEATHER, PATTERN, HEAD, BEAK, EYE, GLINT = range(1, 15)
_NUM_LABELS = 15
# Labels in one group get no outline between them (the belly is shading of the body, not a part).
_OUTLINE_GROUP = np.array([0, 1, 2, 3, 4, 5, 6, 6, 8, 8, 8, 11, 12, 13, 13], dtype=np.uint8)


def _unit(degrees: float) -> tuple[float, float]:
    """(cos, sin) quantised to 2**-20, so libm differences between machines cannot change a pixel."""
    radians = math.radians(degrees)
    scale = 1 << 20
    return round(math.cos(radians) * scale) / scale, round(math.sin(radians) * scale) / scale


Point = tuple[float, float]


@dataclass(frozen=True)
class _View:
    """A zoom about the origin, then a shift: drawing point p -> canvas point zoom * p + shift."""

    zoom: float
    shift: Point

    def point(self, p: Point) -> Point:
        return (self.zoom * p[0] + self.shift[0], self.zoom * p[1] + self.shift[1])


class _Layer:
    """Labels and per-pixel form shading of the foreground, painted shape by shape in z-order.

    With a ``view``, every shape is drawn through it (points moved, lengths scaled by its zoom); without
    one, shapes land where they are given (the scene framing)."""

    def __init__(self, size: int, light: Point, view: _View | None = None) -> None:
        self.size = size
        self.light = light
        self.view = view
        self.labels = np.zeros((size, size), np.uint8)
        self.form = np.ones((size, size), np.float32)
        self.box = [size, size, 0, 0]  # y0, x0, y1, x1 of everything painted

    def _window(self, x_lo: float, y_lo: float, x_hi: float, y_hi: float) -> tuple[int, int, int, int] | None:
        x0, y0 = max(0, math.floor(x_lo)), max(0, math.floor(y_lo))
        x1, y1 = min(self.size, math.ceil(x_hi) + 1), min(self.size, math.ceil(y_hi) + 1)
        return (y0, x0, y1, x1) if x1 > x0 and y1 > y0 else None

    @staticmethod
    def _grid(window: tuple[int, int, int, int], origin: Point) -> tuple[np.ndarray, np.ndarray]:
        y0, x0, y1, x1 = window
        xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - origin[0]))[None, :]
        ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - origin[1]))[:, None]
        return xs, ys

    def _paint(self, label: int, window: tuple[int, int, int, int], mask: np.ndarray,
               form: np.ndarray | float, within: tuple[int, ...]) -> None:
        y0, x0, y1, x1 = window
        labels = self.labels[y0:y1, x0:x1]
        if within:
            allowed = np.zeros_like(mask)
            for other in within:
                allowed |= labels == other
            mask = mask & allowed
        labels[mask] = label
        self.form[y0:y1, x0:x1][mask] = form[mask] if isinstance(form, np.ndarray) else form
        box = self.box
        self.box = [min(box[0], y0), min(box[1], x0), max(box[2], y1), max(box[3], x1)]

    def ellipse(self, label: int, center: Point, a: float, b: float, axis: Point, *,
                within: tuple[int, ...] = (), rim: float = 0.3, sheen: float = 0.18) -> None:
        """Semi-axis ``a`` along the unit vector ``axis``, ``b`` across it; shaded as a lit, rounded solid."""
        if self.view is not None:
            center, a, b = self.view.point(center), self.view.zoom * a, self.view.zoom * b
        ux, uy = axis
        half_w, half_h = math.sqrt(a * a * ux * ux + b * b * uy * uy), math.sqrt(a * a * uy * uy + b * b * ux * ux)
        window = self._window(center[0] - half_w, center[1] - half_h, center[0] + half_w, center[1] + half_h)
        if window is None:
            return
        xs, ys = self._grid(window, center)
        u = (xs * np.float32(ux) + ys * np.float32(uy)) * np.float32(1 / a)
        v = (ys * np.float32(ux) - xs * np.float32(uy)) * np.float32(1 / b)
        r2 = u * u + v * v
        light_u = self.light[0] * ux + self.light[1] * uy
        light_v = self.light[1] * ux - self.light[0] * uy
        form = 1 - np.float32(rim) * r2 * r2 - np.float32(sheen) * (u * np.float32(light_u) + v * np.float32(light_v))
        self._paint(label, window, r2 <= 1, form, within)

    def segment(self, label: int, start: Point, end: Point, r0: float, r1: float, *,
                within: tuple[int, ...] = (), roundness: float = 0.3) -> None:
        """A tapered bar from ``start`` (half-width r0) to ``end`` (r1), shaded like a cylinder."""
        if self.view is not None:
            view = self.view
            start, end, r0, r1 = view.point(start), view.point(end), view.zoom * r0, view.zoom * r1
        dx, dy = end[0] - start[0], end[1] - start[1]
        length = math.sqrt(dx * dx + dy * dy)
        ux, uy = dx / length, dy / length
        r = max(r0, r1)
        window = self._window(min(start[0], end[0]) - r, min(start[1], end[1]) - r,
                              max(start[0], end[0]) + r, max(start[1], end[1]) + r)
        if window is None:
            return
        xs, ys = self._grid(window, start)
        t = (xs * np.float32(ux) + ys * np.float32(uy)) * np.float32(1 / length)
        s = ys * np.float32(ux) - xs * np.float32(uy)
        half = np.float32(r0) + np.float32(r1 - r0) * t
        v = s / half
        mask = (t >= 0) & (t <= 1) & (np.abs(v) <= 1)
        lit = ux * self.light[1] - uy * self.light[0]  # how much the +v side faces away from the light
        form = 1 - np.float32(roundness) * v * v - np.float32(0.5 * roundness * lit) * v
        self._paint(label, window, mask, form, within)

    def triangle(self, label: int, points: tuple[Point, Point, Point], form: float = 1.0) -> None:
        if self.view is not None:
            points = (self.view.point(points[0]), self.view.point(points[1]), self.view.point(points[2]))
        xs_all, ys_all = [p[0] for p in points], [p[1] for p in points]
        window = self._window(min(xs_all), min(ys_all), max(xs_all), max(ys_all))
        if window is None:
            return
        origin = points[0]
        xs, ys = self._grid(window, origin)
        rel = [(p[0] - origin[0], p[1] - origin[1]) for p in points]
        area = (rel[1][0] - rel[0][0]) * (rel[2][1] - rel[0][1]) - (rel[1][1] - rel[0][1]) * (rel[2][0] - rel[0][0])
        sign = np.float32(1.0 if area > 0 else -1.0)
        mask = np.ones((ys.shape[0], xs.shape[1]), dtype=bool)
        for (ax, ay), (bx, by) in zip(rel, rel[1:] + rel[:1], strict=True):
            edge = np.float32(bx - ax) * (ys - np.float32(ay)) - np.float32(by - ay) * (xs - np.float32(ax))
            mask &= edge * sign >= 0
        self._paint(label, window, mask, form, ())


def _value_noise(rng: np.random.Generator, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, interpolated with smoothstep."""
    grid = rng.random((cells_y + 1, cells_x + 1), dtype=np.float32)

    def axis(count: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
        pos = (np.arange(count, dtype=np.float32) + np.float32(0.5)) * np.float32(cells / count)
        index = np.minimum(pos.astype(np.int64), cells - 1)
        t = pos - index
        return index, t * t * (3 - 2 * t)

    iy, ty = axis(height, cells_y)
    ix, tx = axis(width, cells_x)
    rows = grid[iy] * (1 - ty)[:, None] + grid[iy + 1] * ty[:, None]
    return rows[:, ix] * (1 - tx)[None, :] + rows[:, ix + 1] * tx[None, :]


def _fractal(rng: np.random.Generator, size: int, cells: tuple[int, ...], aspect: float = 1.0) -> np.ndarray:
    total = np.zeros((size, size), np.float32)
    weight = 1.0
    for count in cells:
        total += np.float32(weight) * _value_noise(rng, size, size, count, max(1, round(count * aspect)))
        weight *= 0.5
    return total * np.float32(1 / (2 - 2 * weight))


def _jitter(rng: np.random.Generator, color: tuple[int, int, int], amount: float) -> np.ndarray:
    """``color`` made lighter or darker by up to ``amount``, with a third of that per channel (greys stay grey)."""
    offset = rng.uniform(-amount, amount) + rng.uniform(-amount / 3, amount / 3, 3)
    return np.clip(np.asarray(color, np.float32) + offset.astype(np.float32), 0, 255)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _sky(rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    overcast = rng.random() < 0.2
    top = _jitter(rng, (150, 158, 168) if overcast else (62, 124, 206), 14)
    bottom = _jitter(rng, (208, 212, 216) if overcast else (176, 210, 236), 10)
    image = _mix(top, bottom, ys)  # (size, 1, 3): broadcast by the first full-size mix below
    clouds = _fractal(rng, size, (3, 6, 12), aspect=0.6)
    cover = np.clip((clouds - np.float32(rng.uniform(0.5, 0.68))) * np.float32(3.0), 0, 1)
    image = _mix(image, _jitter(rng, (246, 246, 248), 6), cover * np.float32(rng.uniform(0.5, 0.95)))
    sun_x, sun_y, radius = rng.uniform(0, 1), rng.uniform(0, 0.35), rng.uniform(0.15, 0.35)
    glow = 1 / (1 + ((xs - np.float32(sun_x)) ** 2 + (ys - np.float32(sun_y)) ** 2) * np.float32(1 / radius**2))
    return _mix(image, np.asarray((255, 250, 232), np.float32), glow * np.float32(rng.uniform(0.2, 0.5)))


def _foliage(rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    dark, light = _jitter(rng, (30, 64, 32), 10), _jitter(rng, (118, 164, 72), 18)
    leaves = _fractal(rng, size, (5, 10, 20))
    image = _mix(dark, light, np.clip((leaves - np.float32(0.5)) * np.float32(2.4) + np.float32(0.5), 0, 1))
    highlights = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 9))):  # out-of-focus highlights, as behind a real bird photo
        cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.1)
        d2 = ((xs - np.float32(cx)) ** 2 + (ys - np.float32(cy)) ** 2) * np.float32(1 / radius**2)
        highlights += np.float32(rng.uniform(0.25, 0.6)) / (1 + d2 * d2)
    return _mix(image, _jitter(rng, (222, 236, 190), 14), np.minimum(highlights, np.float32(0.85)))


def _ground(rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    image = _sky(rng, size, ys, xs)
    horizon = np.float32(rng.uniform(0.56, 0.76))
    ridge = _value_noise(rng, 1, size, 1, 7)[0] * np.float32(rng.uniform(0.05, 0.12))
    trees = np.float32(rng.uniform(0.02, 0.05)) + ridge
    tree_texture = _fractal(rng, size, (8, 16))
    tree_color = _mix(_jitter(rng, (34, 66, 38), 8), _jitter(rng, (70, 104, 56), 10), tree_texture)
    in_trees = (ys >= horizon - trees[None, :]) & (ys < horizon)
    image = np.where(in_trees[..., None], tree_color, image)
    field = _jitter(rng, ((98, 142, 58), (164, 146, 92), (122, 96, 64))[int(rng.integers(3))], 12)
    grass = _fractal(rng, size, (24, 48), aspect=0.125)  # streaks: fine across, coarse down
    depth = np.clip((ys - horizon) * np.float32(1 / (1 - horizon)), 0, 1)
    ground = field[None, None, :] * (np.float32(0.78) + np.float32(0.4) * grass[..., None])
    ground = ground * (np.float32(1.05) - np.float32(0.25) * depth[..., None])
    return np.where((ys >= horizon)[..., None], ground, image)


# ----------------------------------------------------------------------------------------------
# The bird


@dataclass(frozen=True)
class _Frame:
    """The bird's body frame in canvas pixels: local (p forward, q up) -> canvas point."""

    center: Point
    forward: Point
    up: Point

    def at(self, p: float, q: float) -> Point:
        return (self.center[0] + p * self.forward[0] + q * self.up[0],
                self.center[1] + p * self.forward[1] + q * self.up[1])

    def turn(self, degrees: float) -> Point:
        """The forward direction turned by ``degrees`` towards ``up``."""
        c, s = _unit(degrees)
        return (c * self.forward[0] + s * self.up[0], c * self.forward[1] + s * self.up[1])


def _draw_bird(layer: _Layer, names: dict[str, str], rng: np.random.Generator, size2: int) -> None:
    """Paint one bird, and its branch when perched, into ``layer``."""
    perched = names["pose"] == "perched"
    facing = 1.0 if rng.random() < 0.5 else -1.0
    a = size2 * {"small": 0.115, "medium": 0.145, "large": 0.18}[names["size"]] * rng.uniform(0.93, 1.07)
    b = a * rng.uniform(0.6, 0.7)
    tilt = rng.uniform(18, 38) if perched else rng.uniform(-8, 12)
    c, s = _unit(tilt)
    forward = (facing * c, -s)
    up = (facing * forward[1], -facing * forward[0])  # forward turned 90 degrees towards the sky
    center = (size2 * rng.uniform(0.4, 0.6), size2 * (rng.uniform(0.36, 0.5) if perched else rng.uniform(0.34, 0.56)))
    frame = _Frame(center, forward, up)
    stroke = rng.uniform(100, 135) if rng.random() < 0.6 else rng.uniform(-145, -115)  # wings up- or down-back

    if perched:
        _draw_branch(layer, frame, a, b, rng, size2)
    else:
        _draw_wing_spread(layer, FAR_WING, frame, a, b, stroke, far=True)
    _draw_tail(layer, frame, names["tail"], a, b, perched, rng)
    layer.ellipse(BODY, frame.center, a, b, frame.forward, rim=0.32, sheen=0.2)
    layer.ellipse(BELLY, frame.at(0.1 * a, -0.42 * b), 0.78 * a, 0.55 * b, frame.forward, within=(BODY,), rim=0.2)
    if perched:
        wing_axis = frame.turn(rng.uniform(-16, -8))
        wing_center = frame.at(-0.2 * a, 0.08 * b)
        wing_a, wing_b = 0.82 * a, 0.5 * b
        layer.ellipse(WING, wing_center, wing_a, wing_b, wing_axis, rim=0.25)
        across = (-wing_axis[1], wing_axis[0])
        for offset in (-0.2, 0.0, 0.2):  # primary feathers at the rear of the folded wing
            start = _along(_along(wing_center, wing_axis, -0.15 * wing_a), across, offset * wing_b)
            end = _along(start, wing_axis, -wing_a)
            layer.segment(FEATHER, start, end, 0.05 * wing_b, 0.03 * wing_b, within=(WING,))
        _draw_pattern(layer, names["wing_pattern"], wing_center, wing_a, wing_b, wing_axis, rng)
    else:
        center_w, wing_a, wing_b, axis = _draw_wing_spread(layer, WING, frame, a, b, stroke, far=False)
        _draw_pattern(layer, names["wing_pattern"], center_w, wing_a, wing_b, axis, rng)

    head_r = b * rng.uniform(0.62, 0.72)
    head = frame.at(0.78 * a, 0.6 * b) if perched else frame.at(0.9 * a, 0.32 * b)
    layer.ellipse(HEAD, head, head_r, head_r, frame.forward, rim=0.3, sheen=0.22)
    beak_dir = frame.turn(-rng.uniform(4, 18))
    beak_len = head_r * {"short": 0.55, "medium": 0.95, "long": 1.5}[names["beak_length"]]
    base = _along(head, beak_dir, 0.7 * head_r)
    half = 0.34 * head_r
    normal = (-beak_dir[1], beak_dir[0])
    layer.triangle(BEAK, (_along(base, normal, half), _along(base, normal, -half), _along(base, beak_dir, beak_len)))
    eye = _along(_along(head, frame.forward, 0.3 * head_r), frame.up, 0.2 * head_r)
    layer.ellipse(EYE, eye, 0.2 * head_r, 0.2 * head_r, frame.forward, rim=0.0, sheen=0.0)
    glint = _along(eye, layer.light, -0.07 * head_r)
    layer.ellipse(GLINT, glint, 0.07 * head_r, 0.07 * head_r, frame.forward, rim=0.0, sheen=0.0)


# StackGAN's CUB crop: a square centred on the bird's box with half-side r = int(max(w, h) * 0.75) (official
# StackGAN-v2 datasets.py get_imgs; AttnGAN's is the same), after which "bounding boxes of birds have
# greater-than-0.75 object-image size ratios" (StackGAN, Zhang et al. ICCV 2017, section 5.1).
_CROP_HALF_SIDE = 0.75
_MAX_ZOOM = 3.0  # ours, a bound: the smallest toy birds need about 3x (the mean is 1.7x)


def _bird_view(names: dict[str, str], rng: np.random.Generator, size2: int, light: Point) -> _View:
    """The view that frames the bird as StackGAN's crop frames a CUB bird: the box of the bird's own parts
    (legs in, as in CUB's boxes; branch and leaves out) at the centre, and the square of half-side
    0.75 * max(w, h) around it filling the canvas; the zoom is kept between 1 and ``_MAX_ZOOM``.

    The box is measured by drawing the bird once, unzoomed, on a canvas with a margin of half a canvas on
    every side (no bird reaches that far out); ``rng`` is then put back, so that the framed bird is drawn
    from the same draws and gets the palette the scene framing gives it."""
    margin = size2 // 2
    probe = _Layer(size2 + 2 * margin, light, _View(1.0, (float(margin), float(margin))))
    state = rng.bit_generator.state
    _draw_bird(probe, names, rng, size2)
    rng.bit_generator.state = state
    bird = probe.labels > LEAF  # every label after BRANCH and LEAF is a part of the bird
    rows, cols = np.flatnonzero(bird.any(axis=1)), np.flatnonzero(bird.any(axis=0))
    y0, y1 = int(rows[0]) - margin, int(rows[-1]) + 1 - margin
    x0, x1 = int(cols[0]) - margin, int(cols[-1]) + 1 - margin
    zoom = min(_MAX_ZOOM, max(1.0, size2 / (2 * _CROP_HALF_SIDE * max(x1 - x0, y1 - y0))))
    return _View(zoom, (size2 / 2 - zoom * (x0 + x1) / 2, size2 / 2 - zoom * (y0 + y1) / 2))


def _palette(rng: np.random.Generator, names: dict[str, str]) -> np.ndarray:
    body = _jitter(rng, COLORS[names["body_color"]], 10)
    wing = _jitter(rng, COLORS[names["wing_color"]], 10)
    palette = np.zeros((_NUM_LABELS, 3), np.float32)
    palette[BRANCH] = _jitter(rng, ((98, 68, 44), (112, 98, 84))[int(rng.integers(2))], 10)
    palette[LEAF] = _jitter(rng, (72, 142, 52), 16)
    palette[LEG] = _jitter(rng, ((70, 62, 58), (166, 124, 104))[int(rng.integers(2))], 8)
    palette[FAR_WING] = wing * np.float32(0.72)
    palette[TAIL] = wing * np.float32(0.86)
    palette[BODY] = palette[HEAD] = body
    palette[BELLY] = body + (255 - body) * np.float32(0.18)
    palette[WING] = wing
    palette[FEATHER] = wing * np.float32(0.62)
    palette[PATTERN] = (236, 236, 232) if _pattern_color(names["wing_color"]) == "white" else (26, 26, 28)
    palette[BEAK] = _jitter(rng, BEAK_COLORS[names["beak_color"]], 8)
    palette[EYE] = (16, 16, 18)
    palette[GLINT] = (246, 246, 246)
    return palette


def _along(point: Point, direction: Point, distance: float) -> Point:
    return (point[0] + distance * direction[0], point[1] + distance * direction[1])


def _draw_branch(layer: _Layer, frame: _Frame, a: float, b: float, rng: np.random.Generator, size2: int) -> None:
    """The branch under the bird's feet, a leafy twig and the legs."""
    tops = [frame.at(0.12 * a, -0.7 * b), frame.at(-0.14 * a, -0.7 * b)]
    perch_y = max(top[1] for top in tops) + 0.45 * b
    c, s = _unit(rng.uniform(-14, 14))
    radius = size2 * rng.uniform(0.02, 0.036)
    anchor = (frame.center[0], perch_y + radius)

    def top_of_branch(x: float) -> float:
        return perch_y + (x - anchor[0]) * s / c

    reach = size2 * (1.2 if rng.random() < 0.6 else rng.uniform(0.35, 0.6))
    from_left = rng.random() < 0.5
    start = _along(anchor, (c, s), -size2 * 1.2 if from_left else reach)
    end = _along(anchor, (c, s), reach if from_left else -size2 * 1.2)
    layer.segment(BRANCH, start, end, radius, radius * 0.7, roundness=0.45)
    twig_root = _along(anchor, (c, s), size2 * rng.uniform(0.22, 0.34) * (1 if rng.random() < 0.5 else -1))
    tc, ts = _unit(rng.uniform(20, 70) if rng.random() < 0.5 else rng.uniform(110, 160))
    twig_end = _along(twig_root, (tc, -ts), size2 * rng.uniform(0.1, 0.18))
    layer.segment(BRANCH, twig_root, twig_end, radius * 0.45, radius * 0.2, roundness=0.45)
    for _ in range(int(rng.integers(1, 4))):
        leaf_axis = _unit(rng.uniform(0, 180))
        leaf = _along(twig_end, leaf_axis, size2 * 0.03)
        layer.ellipse(LEAF, leaf, size2 * rng.uniform(0.03, 0.05), size2 * 0.014, leaf_axis, rim=0.2)
    for top in tops:
        foot = (top[0], top_of_branch(top[0]))
        layer.segment(LEG, top, foot, 0.07 * b, 0.05 * b)
        toe = (frame.forward[0] * 0.3 * b, 0.0)
        layer.segment(LEG, (foot[0] - toe[0], foot[1]), (foot[0] + toe[0], foot[1]), 0.05 * b, 0.035 * b)


def _draw_wing_spread(layer: _Layer, label: int, frame: _Frame, a: float, b: float, stroke: float,
                      far: bool) -> tuple[Point, float, float, Point]:
    """One open wing (the far one smaller and turned, for depth); returns its main ellipse."""
    scale = 0.86 if far else 1.0
    sweep = 1 if stroke > 0 else -1  # the far wing and the wing tips lean further back
    axis = frame.turn(stroke + (14 * sweep if far else 0))
    shoulder = frame.at(0.3 * a, 0.3 * b) if far else frame.at(0.12 * a, 0.2 * b)
    wing_a, wing_b = 0.72 * a * scale, 0.42 * b * scale
    center = _along(shoulder, axis, 0.85 * wing_a)
    layer.ellipse(label, center, wing_a, wing_b, axis, rim=0.2)
    tip_axis = frame.turn(stroke + (14 * sweep if far else 0) + 18 * sweep)
    layer.ellipse(label, _along(shoulder, tip_axis, 1.85 * wing_a), 0.62 * wing_a, 0.72 * wing_b, tip_axis, rim=0.2)
    return center, wing_a, wing_b, axis


def _draw_tail(layer: _Layer, frame: _Frame, kind: str, a: float, b: float, perched: bool,
               rng: np.random.Generator) -> None:
    base = frame.at(-0.72 * a, -0.05 * b)
    angle = 180 + (rng.uniform(0, 16) if perched else rng.uniform(-8, 8))
    back = frame.turn(angle)
    if kind == "forked":
        for spread in (-13, 13):
            layer.segment(TAIL, base, _along(base, frame.turn(angle + spread), 1.05 * a), 0.2 * b, 0.1 * b)
    elif kind == "fanned":
        end = _along(base, back, 0.8 * a)
        layer.segment(TAIL, base, end, 0.25 * b, 0.58 * b)
        layer.ellipse(TAIL, end, 0.2 * a, 0.58 * b, back, rim=0.1)
    else:
        length, width = (0.58 * a, 0.3 * b) if kind == "short" else (1.4 * a, 0.27 * b)
        layer.segment(TAIL, base, _along(base, back, length), width, width * 0.8)


def _draw_pattern(layer: _Layer, pattern: str, center: Point, wing_a: float, wing_b: float, axis: Point,
                  rng: np.random.Generator) -> None:
    if pattern == "bars":
        for u in (0.08, -0.28):
            layer.ellipse(PATTERN, _along(center, axis, u * wing_a), 0.075 * wing_a, 1.3 * wing_b, axis,
                          within=(WING, FEATHER), rim=0.0)
    elif pattern == "spots":
        normal = (-axis[1], axis[0])
        for _ in range(int(rng.integers(5, 9))):
            u, v = rng.uniform(-0.7, 0.7, 2)
            spot = _along(_along(center, axis, u * wing_a), normal, v * wing_b)
            radius = 0.16 * wing_b
            layer.ellipse(PATTERN, spot, radius, radius, axis, within=(WING, FEATHER), rim=0.0)


def _compose(layer: _Layer, palette: np.ndarray, image: np.ndarray, rng: np.random.Generator) -> None:
    """Colour, texture and outline the painted parts and box-filter them onto ``image`` (1x, float)."""
    y0, x0, y1, x1 = layer.box
    if y1 <= y0:
        return
    y0, x0, y1, x1 = y0 - y0 % 2, x0 - x0 % 2, y1 + y1 % 2, x1 + x1 % 2
    labels = layer.labels[y0:y1, x0:x1]
    shade = layer.form[y0:y1, x0:x1] * (np.float32(0.95) + np.float32(0.1) * rng.random(labels.shape, dtype=np.float32))
    group = _OUTLINE_GROUP[labels]
    edge = np.zeros(labels.shape, dtype=bool)
    across, down = group[:, 1:] != group[:, :-1], group[1:, :] != group[:-1, :]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    edge[1:, :] |= down
    edge[:-1, :] |= down
    shade[edge] *= np.float32(0.7)
    color = palette[labels] * shade[..., None]  # palette[0] is black, so unpainted pixels add nothing
    coverage = _pool(np.where(labels > 0, np.float32(0.25), np.float32(0)))
    window = image[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
    window *= (1 - coverage)[..., None]
    window += _pool(color) * np.float32(0.25)


def _pool(array: np.ndarray) -> np.ndarray:
    """Sum of each 2x2 block (the box filter that turns the 2x drawing into anti-aliased pixels)."""
    return (array[0::2, 0::2] + array[0::2, 1::2]) + (array[1::2, 0::2] + array[1::2, 1::2])


_BACKGROUNDS = {"sky": _sky, "foliage": _foliage, "ground": _ground}


class RenderItem(NamedTuple):
    """What one picture is a function of (a plain 4-tuple means the scene framing)."""

    seed: int
    split_id: int
    index: int
    size: int
    framing: ToyFraming = "scene"


def render_image(item: tuple[Any, ...]) -> np.ndarray:
    """Image ``index`` of a split as uint8 (size, size, 3); ``item`` = (seed, split_id, index, size[, framing])."""
    return _render(RenderItem(*item))[0]


def _render(item: RenderItem) -> tuple[np.ndarray, _Layer]:
    """The picture and the layer its bird (and branch) was painted on, at twice its resolution."""
    seed, split_id, index, size, framing = item
    names = {key: ATTRIBUTE_VALUES[key][code] for key, code in sample_attributes(seed, split_id, index).items()}
    rng = _rng(seed, split_id, index, 1)
    light = _unit(rng.uniform(40, 140))  # the direction light travels: from above, left or right
    coords = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * np.float32(1 / size)
    ys, xs = coords[:, None], coords[None, :]
    image = _BACKGROUNDS[names["background"]](rng, size, ys, xs)
    view = _bird_view(names, rng, 2 * size, light) if framing == "bird" else None
    layer = _Layer(2 * size, light, view)
    _draw_bird(layer, names, rng, 2 * size)
    _compose(layer, _palette(rng, names), image, rng)
    dx, dy = xs - np.float32(0.5), ys - np.float32(0.5)
    lighting = (1 - np.float32(0.3) * (dx * np.float32(light[0]) + dy * np.float32(light[1]))) * (
        1 - np.float32(0.55) * (dx * dx + dy * dy)
    )
    image = image * lighting[..., None] + (rng.random((size, size, 1), dtype=np.float32) - np.float32(0.5)) * 7
    return (np.clip(image, 0, 255) + np.float32(0.5)).astype(np.uint8), layer


# ----------------------------------------------------------------------------------------------
# The cached dataset


def store_directory(cfg: DataConfig) -> Path:
    """Where the renders for ``cfg`` live; the name holds every input that changes a pixel or caption."""
    key = (
        f"toy-birds-v{RENDERER_VERSION}-seed{cfg.toy_seed}-{cfg.toy_render_size}px"
        f"-train{cfg.toy_train_size}-test{cfg.toy_test_size}-{cfg.toy_framing}"
    )
    return cache_root(cfg.cache_dir) / key


def describe_split(seed: int, split_id: int, count: int) -> dict[str, Any]:
    """Captions and attribute codes of a whole split (cheap: no drawing)."""
    attributes = [sample_attributes(seed, split_id, index) for index in range(count)]
    captions = [make_captions(codes, _rng(seed, split_id, index, 2)) for index, codes in enumerate(attributes)]
    return {"captions": captions, "attributes": {name: [codes[name] for codes in attributes] for name in ATTRIBUTE_VALUES}}


def load_toy_birds(cfg: DataConfig, split: str, progress_fn: ProgressFn | None = None) -> DatasetParts:
    """The toy-birds ``split``, rendered on first use (on all cores) and cached."""
    count = cfg.toy_train_size if split == "train" else cfg.toy_test_size
    split_id = SPLIT_IDS[split]
    directory = store_directory(cfg) / split
    opened = open_image_store(directory)
    if opened is None:
        items = [RenderItem(cfg.toy_seed, split_id, index, cfg.toy_render_size, cfg.toy_framing) for index in range(count)]
        opened = build_image_store(
            directory,
            render_image,
            items,
            lambda: describe_split(cfg.toy_seed, split_id, count),
            task=f"render toy-birds {split}",
            progress_fn=progress_fn,
        )
    store, meta = opened
    attributes = {name: np.asarray(codes, dtype=np.int64) for name, codes in meta["attributes"].items()}
    return DatasetParts(
        name="toy-birds",
        split=split,
        images=store,
        files=[f"{split}/{index:06d}" for index in range(count)],
        captions=[captions[: cfg.captions_per_image] for captions in meta["captions"]],
        class_ids=class_id(attributes["body_color"], attributes["wing_color"]),
        num_classes=NUM_CLASSES,
        attributes=attributes,
        attribute_values={name: list(values) for name, values in ATTRIBUTE_VALUES.items()},
    )
