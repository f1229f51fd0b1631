"""The procedural shapes world: scenes with exact ground truth, and splits.

Every scene is a 128x128 RGB image on a uniform gray background holding 1 to 4
non-overlapping coloured shapes.  Everything about a scene (objects, masks,
bounding boxes, colours) is known exactly, so any model's patch grid can be
mapped back to objects with :func:`patch_coverage`.

A designed "language prior" is built into the sampler: three partner pairs
(:data:`PRIOR_PAIRS`) tend to co-occur.  When the sampler draws one member of
a partner pair it also places the partner with probability
:data:`PRIOR_STRENGTH` (0.8), provided there is room for both.  ``prior=False``
turns this off.

Scene ``index`` of split ``name`` with seed ``seed`` is generated from its own
``np.random.default_rng(np.random.SeedSequence([crc32(name), seed, index]))``,
so scenes are reproducible individually and splits with different names never
share a seed stream.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from ..core.errors import ArgumentError

__all__ = [
    "IMAGE_SIZE", "MIN_SIZE", "MAX_SIZE", "MAX_OBJECTS", "GAP", "JITTER",
    "BACKGROUND_RANGE", "PRIOR_STRENGTH",
    "SHAPES", "COLOURS", "COLOUR_RGB", "PAIRS", "PAIR_INDEX", "NUM_WORDS",
    "PRIOR_PAIRS", "partner", "Obj", "Scene", "scene_rng", "make_scene",
    "make_split", "iter_scenes", "object_index_map", "patch_coverage",
    "pair_frequencies", "draw_mask", "plot_samples", "split_seed",
    "colourise_index_map",
]

IMAGE_SIZE = 128
MIN_SIZE, MAX_SIZE = 16, 40          # bounding-box side, inclusive
MAX_OBJECTS = 4
GAP = 2                              # minimum free pixels between objects
JITTER = 20                          # per-channel colour jitter (+-)
BACKGROUND_RANGE = (0, 60)           # gray level, inclusive
PRIOR_STRENGTH = 0.8
_PLACE_TRIES = 200

SHAPES: list[str] = ["circle", "square", "triangle", "cross"]
COLOURS: list[str] = ["red", "green", "blue", "yellow", "purple", "orange"]
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "orange": (240, 140, 30),
}
PAIRS: list[tuple[str, str]] = [(c, s) for c in COLOURS for s in SHAPES]
PAIR_INDEX: dict[tuple[str, str], int] = {p: i for i, p in enumerate(PAIRS)}
NUM_WORDS: list[str] = ["zero", "one", "two", "three", "four"]

PRIOR_PAIRS: list[tuple[tuple[str, str], tuple[str, str]]] = [
    (("red", "circle"), ("blue", "square")),
    (("green", "triangle"), ("yellow", "cross")),
    (("purple", "square"), ("orange", "circle")),
]
_PARTNER: dict[tuple[str, str], tuple[str, str]] = {}
for _a, _b in PRIOR_PAIRS:
    _PARTNER[_a], _PARTNER[_b] = _b, _a


def partner(colour: str, shape: str) -> tuple[str, str] | None:
    """The prior partner of ``(colour, shape)``, or None if it has none."""
    return _PARTNER.get((colour, shape))


@dataclass(eq=False)
class Obj:
    """One object: ``bbox`` is the tight (x0, y0, x1, y1) box, exclusive end."""
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    bbox: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)

    @property
    def size(self) -> int:
        """Side of the bounding box (max of width and height)."""
        x0, y0, x1, y1 = self.bbox
        return max(x1 - x0, y1 - y0)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


@dataclass(eq=False)
class Scene:
    """A rendered scene plus its exact ground truth."""
    image: np.ndarray = field(repr=False)   # [128, 128, 3] uint8
    background: int
    objects: list[Obj]
    seed: int
    split: str
    index: int

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image, mode="RGB")

    def pairs(self) -> list[tuple[str, str]]:
        return [o.pair for o in self.objects]

    def label_vector(self) -> np.ndarray:
        """float32 [24] multi-hot over :data:`PAIRS`."""
        v = np.zeros(len(PAIRS), dtype=np.float32)
        for o in self.objects:
            v[PAIR_INDEX[o.pair]] = 1.0
        return v

    def has(self, colour: str, shape: str) -> bool:
        return any(o.colour == colour and o.shape == shape for o in self.objects)

    def count(self, shape: str, colour: str | None = None) -> int:
        return sum(o.shape == shape and (colour is None or o.colour == colour)
                   for o in self.objects)

    def __len__(self) -> int:
        return len(self.objects)


def draw_mask(shape: str, x0: int, y0: int, size: int,
              image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean mask of ``shape`` drawn in the square box at (x0, y0) of side ``size``."""
    im = Image.new("L", (image_size, image_size), 0)
    d = ImageDraw.Draw(im)
    x1, y1 = x0 + size - 1, y0 + size - 1          # inclusive corners for PIL
    if shape == "circle":
        d.ellipse([x0, y0, x1, y1], fill=255)
    elif shape == "square":
        d.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "triangle":
        d.polygon([(x0, y1), (x1, y1), (x0 + (size - 1) / 2.0, y0)], fill=255)
    elif shape == "cross":
        w = max(1, int(round(size / 3.0)))
        o = (size - w) // 2
        d.rectangle([x0, y0 + o, x1, y0 + o + w - 1], fill=255)
        d.rectangle([x0 + o, y0, x0 + o + w - 1, y1], fill=255)
    else:
        raise ArgumentError(f"unknown shape {shape!r}")
    return np.asarray(im) > 0


def _tight_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def split_seed(name: str) -> int:
    """Stable integer for a split name (crc32; never Python's salted hash())."""
    return zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF


def scene_rng(name: str, seed: int, index: int, *extra: int) -> np.random.Generator:
    """The Generator for scene ``index`` of split ``name`` (``extra`` adds sub-streams)."""
    return np.random.default_rng(
        np.random.SeedSequence([split_seed(name), int(seed), int(index), *extra]))


class _Placer:
    """Reject-samples non-overlapping square boxes (with a GAP-pixel margin)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.boxes: list[tuple[int, int, int, int]] = []

    def place(self) -> tuple[int, int, int] | None:
        for _ in range(_PLACE_TRIES):
            s = int(self.rng.integers(MIN_SIZE, MAX_SIZE + 1))
            x0 = int(self.rng.integers(0, IMAGE_SIZE - s + 1))
            y0 = int(self.rng.integers(0, IMAGE_SIZE - s + 1))
            box = (x0, y0, x0 + s, y0 + s)
            if all(box[0] >= b[2] + GAP or b[0] >= box[2] + GAP or
                   box[1] >= b[3] + GAP or b[1] >= box[3] + GAP
                   for b in self.boxes):
                self.boxes.append(box)
                return x0, y0, s
        return None


def _sample_layout(rng: np.random.Generator, prior: bool) -> list[tuple[str, str]]:
    """Draw the list of (colour, shape) pairs of a scene (before placement).

    ``n`` in 1..4 objects are drawn uniformly from PAIRS.  With the prior on,
    drawing a member of a partner pair (whose partner is not yet in the scene)
    also places its partner with probability PRIOR_STRENGTH, if there is room
    (at most 4 objects).  The partner may take the scene one object past ``n``.
    """
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    out: list[tuple[str, str]] = []
    while len(out) < n:
        pair = PAIRS[int(rng.integers(len(PAIRS)))]
        p = _PARTNER.get(pair) if prior else None
        out.append(pair)
        if (p is not None and p not in out and len(out) < MAX_OBJECTS
                and rng.random() < PRIOR_STRENGTH):
            out.append(p)
    return out


def make_scene(name: str, seed: int, index: int, prior: bool = True) -> Scene:
    """Generate scene ``index`` of split ``name`` (deterministic)."""
    rng = scene_rng(name, seed, index)
    background = int(rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1))
    layout = _sample_layout(rng, prior)
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), background, dtype=np.uint8)
    placer = _Placer(rng)
    objects: list[Obj] = []
    for colour, shape in layout:
        spot = placer.place()
        if spot is None:                      # practically never: no space left
            break
        x0, y0, s = spot
        mask = draw_mask(shape, x0, y0, s)
        nominal = np.array(COLOUR_RGB[colour])
        rgb = np.clip(nominal + rng.integers(-JITTER, JITTER + 1, size=3), 0, 255)
        rgb_t = tuple(int(c) for c in rgb)
        image[mask] = rgb_t
        objects.append(Obj(shape, colour, rgb_t, _tight_bbox(mask), mask))
    return Scene(image, background, objects, int(seed), name, int(index))


def make_split(name: str, n: int, seed: int = 0, prior: bool = True) -> list[Scene]:
    """Scenes 0..n-1 of split ``name`` ("train", "val", "test" or any string)."""
    return [make_scene(name, seed, i, prior) for i in range(n)]


def iter_scenes(name: str, seed: int = 0, start: int = 0,
                prior: bool = True) -> Iterator[Scene]:
    """Endless stream of scenes ``start, start+1, ...`` (same scenes as make_split)."""
    i = start
    while True:
        yield make_scene(name, seed, i, prior)
        i += 1


def object_index_map(scene: Scene) -> np.ndarray:
    """int16 [128, 128]: -1 on background, else the index of the object there."""
    out = np.full(scene.image.shape[:2], -1, dtype=np.int16)
    for k, o in enumerate(scene.objects):
        out[o.mask] = k
    return out


def patch_coverage(scene: Scene, grid: tuple[int, int] = (4, 4),
                   box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """float32 [n_obj, rows, cols]: fraction of each grid cell covered by each object.

    The ``rows x cols`` grid tiles ``box = (x0, y0, x1, y1)`` in pixel units
    (default: the whole image; fractional and out-of-image boxes are fine,
    pixels outside the image count as background).  This maps any model's
    patch grid (e.g. 14x14 patches over a resized/cropped image) to objects.
    (:func:`vlinterp.metrics.coverage.mask_coverage` on the objects' masks.)
    """
    from ..metrics.coverage import mask_coverage

    return mask_coverage([o.mask for o in scene.objects], scene.image.shape[:2], grid, box)


@lru_cache(maxsize=8)
def _frequency_sample(n: int, seed: int) -> tuple[np.ndarray, tuple]:
    counts = np.zeros(len(PAIRS), dtype=np.int64)
    scenes = make_split("train", n, seed)
    for s in scenes:
        counts += s.label_vector().astype(np.int64)
    return counts, tuple(tuple(s.pairs()) for s in scenes)


def pair_frequencies(n: int = 2000, seed: int = 0) -> dict[tuple[str, str], float]:
    """Empirical P(pair present) over ``n`` training scenes (cached)."""
    counts, _ = _frequency_sample(n, seed)
    return {p: float(c) / n for p, c in zip(PAIRS, counts)}


# A fixed, well-separated palette for colourising object index maps.
_INDEX_PALETTE = np.array([[0, 0, 0], [255, 255, 255], [0, 200, 255],
                           [255, 0, 200], [120, 255, 0]], dtype=np.uint8)


def colourise_index_map(idx: np.ndarray) -> np.ndarray:
    """RGB uint8 rendering of an object index map (background black)."""
    return _INDEX_PALETTE[(idx.astype(np.int64) + 1) % len(_INDEX_PALETTE)]


def plot_samples(path: str | os.PathLike = "assets/shapes_world.png", n: int = 8,
                 seed: int = 0, name: str = "train", scale: int = 2) -> str:
    """Write a grid of ``n`` scenes, each with its colourised index map beside it.

    Written atomically (temp file in the same directory, then ``os.replace``); a file vlinterp
    did not write is never replaced.
    Returns the path written.
    """
    from PIL import ImageFont
    scenes = make_split(name, n, seed)
    tile, pad, label_h = IMAGE_SIZE * scale, 6, 18
    cols = min(4, max(1, n))
    rows = (n + cols - 1) // cols
    cell_w, cell_h = 2 * tile + pad * 3, tile + label_h + pad
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for k, s in enumerate(scenes):
        r, c = divmod(k, cols)
        x, y = c * cell_w + pad, r * cell_h + pad
        img = s.pil().resize((tile, tile), Image.NEAREST)
        idx = Image.fromarray(colourise_index_map(object_index_map(s))).resize(
            (tile, tile), Image.NEAREST)
        canvas.paste(img, (x, y))
        canvas.paste(idx, (x + tile + pad, y))
        text = ", ".join(f"{o.colour} {o.shape}" for o in
                         sorted(s.objects, key=lambda o: o.bbox[0]))
        draw.text((x, y + tile + 2), text, fill=(0, 0, 0), font=font)
    from ..core.io import atomic_path

    path = os.fspath(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
