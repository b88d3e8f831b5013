"""The ``shapes`` world: procedurally rendered 32x32 images with noisy captions.

This is the embedded default data set of vlmsae: it needs no download and renders 50k pairs in a
few seconds (numpy, vectorised over images). Each image holds one or two objects, each with a
*shape*, a *colour*, a *size* and a *position* (a cell of a 3x3 grid); all of it is kept as ground
truth in ``attributes``.

The world is noisy the way real image-caption data is:

* images hold things captions never mention: a plain, gradient, striped or blotchy-noise
  background, small coloured clutter specks, object rotation and colour jitter, a global
  brightness factor and pixel noise;
* captions leave things out: size and position are often dropped, the colour sometimes, and a
  two-object image is sometimes described by one object only; wording varies through
  paraphrase templates and synonyms.

A caption never names a shape or colour that the image does not hold: every mentioned object is
one of the image's objects, described with its own attributes.

Randomness comes from ``np.random.SeedSequence([seed, split_code])``, so a (seed, split) pair
always gives the same images and captions, and the ``train`` and ``test`` splits of one seed
are independent draws.
"""

from __future__ import annotations

import re
from typing import Iterator, NamedTuple

import numpy as np

IMAGE_SIZE = 32
MAX_OBJECTS = 2

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white")
SIZES = ("small", "large")
#: cells of the 3x3 position grid, row-major (index = 3 * row + column)
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
BACKGROUNDS = ("plain", "gradient", "stripes", "noise")

#: object colours in RGB, values in [0, 1]
PALETTE = np.array(
    [
        [0.90, 0.10, 0.10],  # red
        [1.00, 0.55, 0.05],  # orange
        [0.95, 0.90, 0.10],  # yellow
        [0.10, 0.75, 0.20],  # green
        [0.10, 0.85, 0.90],  # cyan
        [0.15, 0.30, 0.95],  # blue
        [0.60, 0.15, 0.80],  # purple
        [1.00, 0.50, 0.75],  # pink
        [0.95, 0.95, 0.95],  # white
    ],
    dtype=np.float32,
)

#: caption words for each attribute value (the first one is the canonical name)
SHAPE_WORDS = {
    "circle": ("circle", "disk", "ball"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus"),
    "bar": ("bar", "rectangle"),
}
COLOUR_WORDS = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
    "white": ("white",),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}

# Position phrases per grid cell; "{r}" / "{c}" are filled with row / column words.
_ROW_WORDS = {0: ("top", "upper"), 2: ("bottom", "lower")}   # corners: "upper left", "top left"
_EDGE_ROW_WORDS = {0: ("top",), 2: ("bottom",)}                 # edges: "at the top", never "at the upper"
_COL_WORDS = {0: ("left",), 2: ("right",)}
_CORNER_TEMPLATES = ("in the {r} {c}", "at the {r} {c}", "in the {r} {c} corner")
_ROW_EDGE_TEMPLATES = ("at the {r}", "near the {r}")
_COL_EDGE_TEMPLATES = ("on the {c}", "to the {c}")
_CENTER_PHRASES = ("in the center", "in the middle")

# Sentence templates: {a} is a noun phrase with its position phrase, {b} a second one.
_ONE_OBJECT_TEMPLATES = ("{a}", "a photo of {a}", "there is {a}", "an image with {a}", "a picture showing {a}")
_TWO_OBJECT_TEMPLATES = ("{a} and {b}", "a photo of {a} and {b}", "there is {a} and {b}", "{a} next to {b}",
                         "two shapes: {a} and {b}")

# Probabilities of the caption noise.
P_TWO_OBJECTS = 0.5
P_DROP_SIZE = 0.35
P_DROP_POSITION = 0.35
P_DROP_COLOUR = 0.1
P_NAME_ONE_OF_TWO = 0.25
P_COLOUR_AFTER_SHAPE = 0.15   # "a circle that is red" instead of "a red circle"

SPLIT_CODES = {"train": 0, "test": 1}
_CHUNK = 2048   # images rendered per vectorised step; fixed so pixel noise is chunk-independent


class ShapesBatch(NamedTuple):
    """A rendered batch: unpacks as ``images, captions, attributes``.

    images: uint8 array (n, 32, 32, 3).
    captions: list of n lists of ``captions_per_image`` strings.
    attributes: dict of numpy arrays, ground truth per image (object slots past ``n_objects``
        hold -1 / nan):
        ``n_objects`` (n,), ``shape`` / ``colour`` / ``size`` / ``position`` (n, 2) indices into
        ``SHAPES`` / ``COLOURS`` / ``SIZES`` / ``POSITIONS``, ``center`` (n, 2, 2) pixel (x, y),
        ``radius`` (n, 2), ``angle`` (n, 2) radians, ``background`` (n,) index into
        ``BACKGROUNDS``, ``brightness`` (n,) global factor, ``n_clutter`` (n,), and
        ``mentioned`` (n, captions_per_image, 2) bool: which objects each caption names, and
        ``said_size`` / ``said_colour`` / ``said_position`` (same shape): which of their
        attributes it names.
    """

    images: np.ndarray
    captions: list
    attributes: dict


def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}: use one of {sorted(SPLIT_CODES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split]]))


def _sample_objects(n: int, rng: np.random.Generator) -> dict:
    """Draw the per-object ground truth. Two objects sit in grid cells two apart along rows or
    columns (or both), and radii are capped so that they never overlap: every named object is
    fully visible."""
    n_objects = 1 + (rng.random(n) < P_TWO_OBJECTS).astype(np.int64)
    shape = rng.integers(0, len(SHAPES), size=(n, MAX_OBJECTS))
    colour = rng.integers(0, len(COLOURS), size=(n, MAX_OBJECTS))
    size = rng.integers(0, len(SIZES), size=(n, MAX_OBJECTS))
    # Second object of the same image differs from the first in colour or shape, so that a
    # caption naming one object picks it out.
    same = (shape[:, 1] == shape[:, 0]) & (colour[:, 1] == colour[:, 0])
    colour[same, 1] = (colour[same, 0] + rng.integers(1, len(COLOURS), size=same.sum())) % len(COLOURS)

    cell = rng.integers(0, 9, size=(n, MAX_OBJECTS))
    # Far cell for the second object: row and/or column moved by 2 (cells 0/2 apart), so the
    # centres are >= 20 - 2 * jitter pixels apart along at least one axis.
    row0, col0 = cell[:, 0] // 3, cell[:, 0] % 3
    far_rows = np.where(row0 == 1, rng.choice([0, 2], size=n), 2 - row0)
    far_cols = np.where(col0 == 1, rng.choice([0, 2], size=n), 2 - col0)
    mode = rng.integers(0, 3, size=n)  # 0: move the row, 1: move the column, 2: move both
    row1 = np.where(mode != 1, far_rows, rng.integers(0, 3, size=n))
    col1 = np.where(mode != 0, far_cols, rng.integers(0, 3, size=n))
    cell[:, 1] = 3 * row1 + col1

    jitter = rng.uniform(-1.5, 1.5, size=(n, MAX_OBJECTS, 2))
    grid = np.array([6.0, 16.0, 26.0])
    center = np.stack([grid[cell % 3], grid[cell // 3]], axis=-1) + jitter
    radius = np.where(size == 0, rng.uniform(3.2, 4.5, size=(n, MAX_OBJECTS)),
                      rng.uniform(6.0, 7.2, size=(n, MAX_OBJECTS)))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(n, MAX_OBJECTS))
    colour_jitter = rng.uniform(-0.07, 0.07, size=(n, MAX_OBJECTS, 3))

    absent = np.arange(MAX_OBJECTS)[None, :] >= n_objects[:, None]
    for arr in (shape, colour, size, cell):
        arr[absent] = -1
    for arr in (radius, angle):
        arr[absent] = np.nan
    center[absent] = np.nan
    return dict(n_objects=n_objects, shape=shape, colour=colour, size=size, position=cell,
                center=center.astype(np.float32), radius=radius.astype(np.float32),
                angle=angle.astype(np.float32), colour_jitter=colour_jitter.astype(np.float32))


def _signed_distance(shape_id: int, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to a shape of radius r centred at
    0, in the shape's own rotated frame (u, v). Used for anti-aliased coverage clip(0.5 - sdf)."""
    name = SHAPES[shape_id]
    if name == "circle":
        return np.sqrt(u * u + v * v) - r
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if name == "diamond":
        return (np.abs(u) + np.abs(v) - 1.1 * r) / np.sqrt(2.0)
    if name == "triangle":
        # equilateral, circumradius 1.15 r: inside iff p . n_k <= inradius for the 3 edge normals
        inradius = 0.575 * r
        d = v  # normal pointing down (+v); the other two at +-120 degrees
        d = np.maximum(d, -0.5 * v + 0.8660254 * u)
        d = np.maximum(d, -0.5 * v - 0.8660254 * u)
        return d - inradius
    if name == "cross":
        half_width = 0.33 * r
        arm_a = np.maximum(np.abs(u) - r, np.abs(v) - half_width)
        arm_b = np.maximum(np.abs(v) - r, np.abs(u) - half_width)
        return np.minimum(arm_a, arm_b)
    if name == "bar":
        return np.maximum(np.abs(u) - r, np.abs(v) - 0.4 * r)
    raise AssertionError(name)


def _background_colours(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two dim, weakly tinted colours per image (n, 2, 3): darker and greyer than any object
    colour so objects stay visible."""
    grey = rng.uniform(0.05, 0.45, size=(n, 2, 1))
    tint = rng.uniform(-0.12, 0.12, size=(n, 2, 3))
    return np.clip(grey + tint, 0.0, 0.6).astype(np.float32)


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that linearly interpolates a length-n_in signal to n_out samples."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    mat = np.zeros((n_out, n_in), dtype=np.float32)
    mat[np.arange(n_out), lo] = 1.0 - frac
    mat[np.arange(n_out), lo + 1] = frac
    return mat


def _render_chunk(objs: dict, scene: dict, rng: np.random.Generator) -> np.ndarray:
    """Render images for the per-image parameters in objs / scene (already sliced to one
    chunk). Returns float32 (m, 32, 32, 3) in [0, 1]."""
    m = objs["n_objects"].shape[0]
    coords = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    xx = coords[None, None, :]
    yy = coords[None, :, None]

    # Background: img = c0 + t * (c1 - c0) with a per-kind blend field t in [0, 1].
    kind = scene["background"]
    t = np.zeros((m, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    phi = scene["bg_angle"][:, None, None]
    along = ((xx - 16.0) * np.cos(phi) + (yy - 16.0) * np.sin(phi)).astype(np.float32)
    grad = kind == BACKGROUNDS.index("gradient")
    t[grad] = np.clip(0.5 + along[grad] / 32.0, 0.0, 1.0)
    stripes = kind == BACKGROUNDS.index("stripes")
    freq = scene["bg_freq"][:, None, None]
    t[stripes] = 0.5 + 0.5 * np.sin(2.0 * np.pi * freq[stripes] * along[stripes] / 32.0)
    noise = kind == BACKGROUNDS.index("noise")
    if noise.any():
        up = _bilinear_matrix(5, IMAGE_SIZE)
        t[noise] = np.einsum("ij,njk,lk->nil", up, scene["bg_noise"][noise], up)
    c0, c1 = scene["bg_colours"][:, 0], scene["bg_colours"][:, 1]
    img = c0[:, None, None, :] + t[..., None] * (c1 - c0)[:, None, None, :]

    # Clutter: small axis-aligned specks under the objects, never described. Unused slots get a
    # negative half-size (empty mask), so every slot is one pass over the whole chunk.
    for j in range(scene["clutter_pos"].shape[1]):
        half = np.where((j < scene["n_clutter"])[:, None], scene["clutter_half"][:, j], -1.0)
        mask = ((np.abs(xx - scene["clutter_pos"][:, j, 0, None, None]) <= half[:, 0, None, None])
                & (np.abs(yy - scene["clutter_pos"][:, j, 1, None, None]) <= half[:, 1, None, None]))
        np.copyto(img, scene["clutter_colour"][:, j, None, None, :], where=mask[..., None])

    # Objects, anti-aliased, grouped by shape so each pixel evaluates one distance function.
    for slot in range(MAX_OBJECTS):
        for shape_id in range(len(SHAPES)):
            idx = np.nonzero(objs["shape"][:, slot] == shape_id)[0]
            if idx.size == 0:
                continue
            cx = objs["center"][idx, slot, 0][:, None, None]
            cy = objs["center"][idx, slot, 1][:, None, None]
            ang = objs["angle"][idx, slot][:, None, None]
            dx, dy = xx - cx, yy - cy
            cos, sin = np.cos(ang), np.sin(ang)
            u = cos * dx + sin * dy
            v = -sin * dx + cos * dy
            r = objs["radius"][idx, slot][:, None, None]
            alpha = np.clip(0.5 - _signed_distance(shape_id, u, v, r), 0.0, 1.0)[..., None]
            rgb = PALETTE[objs["colour"][idx, slot]] + objs["colour_jitter"][idx, slot]
            img[idx] = img[idx] * (1.0 - alpha) + alpha * rgb[:, None, None, :]

    img *= scene["brightness"][:, None, None, None]
    # uniform pixel noise (std 0.02): float32 uniforms are the cheapest draw, and the noise only
    # has to be there, not be Gaussian
    noise = rng.random(size=img.shape, dtype=np.float32)
    noise -= 0.5
    noise *= 0.07
    img += noise
    return np.clip(img, 0.0, 1.0)


def _sample_scene(n: int, rng: np.random.Generator) -> dict:
    """Per-image nuisance: background kind and parameters, clutter, brightness."""
    max_clutter = 4
    return dict(
        background=rng.integers(0, len(BACKGROUNDS), size=n),
        bg_colours=_background_colours(n, rng),
        bg_angle=rng.uniform(0.0, 2.0 * np.pi, size=n).astype(np.float32),
        bg_freq=rng.uniform(1.5, 5.0, size=n).astype(np.float32),
        bg_noise=rng.random((n, 5, 5), dtype=np.float32),
        n_clutter=rng.integers(0, max_clutter + 1, size=n),
        clutter_pos=rng.uniform(0.0, IMAGE_SIZE, size=(n, max_clutter, 2)).astype(np.float32),
        clutter_half=rng.uniform(0.4, 1.2, size=(n, max_clutter, 2)).astype(np.float32),
        clutter_colour=rng.uniform(0.0, 1.0, size=(n, max_clutter, 3)).astype(np.float32),
        brightness=rng.uniform(0.75, 1.15, size=n).astype(np.float32),
    )


def _position_phrase(cell: int, pick: float) -> str:
    """One paraphrase of the position of a grid cell; pick in [0, 1) chooses the wording."""
    row, col = divmod(int(cell), 3)
    if row == 1 and col == 1:
        options = _CENTER_PHRASES
    elif row != 1 and col != 1:
        options = [t.format(r=r, c=c) for t in _CORNER_TEMPLATES for r in _ROW_WORDS[row] for c in _COL_WORDS[col]]
    elif row != 1:
        options = [t.format(r=r) for t in _ROW_EDGE_TEMPLATES for r in _EDGE_ROW_WORDS[row]]
    else:
        options = [t.format(c=c) for t in _COL_EDGE_TEMPLATES for c in _COL_WORDS[col]]
    return options[int(pick * len(options))]


def _noun_phrase(objs: dict, i: int, slot: int, u: np.ndarray) -> str:
    """Describe object `slot` of image i; u holds uniform draws that decide what is dropped and
    which synonyms are used (u[0..6])."""
    shape = SHAPES[objs["shape"][i, slot]]
    colour = COLOURS[objs["colour"][i, slot]]
    size = SIZES[objs["size"][i, slot]]
    shape_word = SHAPE_WORDS[shape][int(u[0] * len(SHAPE_WORDS[shape]))]
    colour_word = COLOUR_WORDS[colour][int(u[1] * len(COLOUR_WORDS[colour]))]
    size_word = SIZE_WORDS[size][int(u[2] * len(SIZE_WORDS[size]))]
    keep_size = u[3] >= P_DROP_SIZE
    keep_colour = u[4] >= P_DROP_COLOUR
    position = "" if u[5] < P_DROP_POSITION else " " + _position_phrase(objs["position"][i, slot], u[6])
    if keep_colour and u[7] < P_COLOUR_AFTER_SHAPE:
        adjective = f"{size_word} " if keep_size else ""
        return f"a {adjective}{shape_word} that is {colour_word}{position}"
    words = [w for w, keep in ((size_word, keep_size), (colour_word, keep_colour)) if keep]
    return " ".join(["a", *words, shape_word]) + position


_DRAWS_PER_OBJECT = 8


def _captions(objs: dict, captions_per_image: int, rng: np.random.Generator):
    """Captions (list of lists) and what they say: dict of (n, captions_per_image, 2) bool masks
    ``mentioned`` (the object is named) and ``said_size`` / ``said_colour`` / ``said_position``
    (its size / colour / position is named too)."""
    n = objs["n_objects"].shape[0]
    u_obj = rng.random((n, captions_per_image, MAX_OBJECTS, _DRAWS_PER_OBJECT))
    u_sent = rng.random((n, captions_per_image, 3))
    mentioned = np.zeros((n, captions_per_image, MAX_OBJECTS), dtype=bool)
    captions = []
    for i in range(n):
        per_image = []
        for j in range(captions_per_image):
            u = u_sent[i, j]
            if objs["n_objects"][i] == 2 and u[0] >= P_NAME_ONE_OF_TWO:
                order = (0, 1) if u[1] < 0.5 else (1, 0)
                a, b = (_noun_phrase(objs, i, s, u_obj[i, j, s]) for s in order)
                template = _TWO_OBJECT_TEMPLATES[int(u[2] * len(_TWO_OBJECT_TEMPLATES))]
                per_image.append(template.format(a=a, b=b))
                mentioned[i, j] = True
            else:
                slot = 0 if objs["n_objects"][i] == 1 else int(u[1] < 0.5)
                a = _noun_phrase(objs, i, slot, u_obj[i, j, slot])
                template = _ONE_OBJECT_TEMPLATES[int(u[2] * len(_ONE_OBJECT_TEMPLATES))]
                per_image.append(template.format(a=a))
                mentioned[i, j, slot] = True
        captions.append(per_image)
    # the keep / drop draws of _noun_phrase, read off the same uniforms
    said = {"mentioned": mentioned,
            "said_size": mentioned & (u_obj[..., 3] >= P_DROP_SIZE),
            "said_colour": mentioned & (u_obj[..., 4] >= P_DROP_COLOUR),
            "said_position": mentioned & (u_obj[..., 5] >= P_DROP_POSITION)}
    return captions, said


def full_caption(attributes: dict, i: int) -> str:
    """A fully descriptive caption of image i: every object with its size, colour, shape and
    position, first synonym each, fixed wording. The clean-captions setting of the modality-gap
    ablation trains on these instead of the noisy ones."""
    phrases = []
    for slot in range(int(attributes["n_objects"][i])):
        shape = SHAPES[attributes["shape"][i, slot]]
        colour = COLOURS[attributes["colour"][i, slot]]
        size = SIZES[attributes["size"][i, slot]]
        position = _position_phrase(attributes["position"][i, slot], 0.0)
        phrases.append(f"a {SIZE_WORDS[size][0]} {COLOUR_WORDS[colour][0]} {SHAPE_WORDS[shape][0]} {position}")
    return " and ".join(phrases)


def render_shapes(n: int, seed: int = 0, split: str = "train", captions_per_image: int = 1) -> ShapesBatch:
    """Render n image-caption pairs of the shapes world as arrays.

    Returns ``ShapesBatch(images, captions, attributes)`` (see its docstring). Deterministic for
    (n, seed, split, captions_per_image).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int (number of images), got {n!r}")
    if not isinstance(captions_per_image, (int, np.integer)) or captions_per_image < 1:
        raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
    rng = _rng(seed, split)
    objs = _sample_objects(n, rng)
    scene = _sample_scene(n, rng)
    captions, said = _captions(objs, captions_per_image, rng)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        chunk = _render_chunk({k: v[sl] for k, v in objs.items()}, {k: v[sl] for k, v in scene.items()}, rng)
        images[sl] = np.round(chunk * 255.0).astype(np.uint8)
    attributes = {k: objs[k] for k in ("n_objects", "shape", "colour", "size", "position", "center", "radius", "angle")}
    attributes.update(background=scene["background"], brightness=scene["brightness"],
                      n_clutter=scene["n_clutter"], **said)
    return ShapesBatch(images, captions, attributes)


def vocabulary() -> list[str]:
    """Every word a shapes caption can contain, sorted (the toyclip text tower's vocabulary)."""
    texts = [*_ONE_OBJECT_TEMPLATES, *_TWO_OBJECT_TEMPLATES, *_CORNER_TEMPLATES, *_ROW_EDGE_TEMPLATES,
             *_COL_EDGE_TEMPLATES, *_CENTER_PHRASES, "a that is"]
    for words in (*SHAPE_WORDS.values(), *COLOUR_WORDS.values(), *SIZE_WORDS.values(),
                  *_ROW_WORDS.values(), *_COL_WORDS.values()):
        texts.extend(words)
    return sorted({w for text in texts for w in tokenize(re.sub(r"\{\w\}", " ", text))})


def tokenize(text: str) -> list[str]:
    """Lower-case words: letters only, everything else separates words."""
    out, word = [], []
    for ch in text.lower():
        if "a" <= ch <= "z":
            word.append(ch)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out


class ShapesPairs:
    """Pair source over the shapes world: iterates ``(PIL.Image, [captions], id)``.

    ``id`` is the image index (int) within this (seed, split). Images are rendered once, on first
    use; ``images`` / ``captions`` / ``attributes`` give the arrays directly.
    """

    def __init__(self, n: int = 10_000, seed: int = 0, split: str = "train", captions_per_image: int = 1):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int (number of images), got {n!r}")
        _rng(seed, split)  # validates seed and split now rather than on first use
        if not isinstance(captions_per_image, (int, np.integer)) or captions_per_image < 1:
            raise ValueError(f"captions_per_image must be a positive int, got {captions_per_image!r}")
        self.n, self.seed, self.split, self.captions_per_image = int(n), int(seed), split, int(captions_per_image)
        self._batch: ShapesBatch | None = None

    @property
    def config(self) -> dict:
        """Everything that determines the data (for cache keys and manifests)."""
        return {"source": "shapes", "n": self.n, "seed": self.seed, "split": self.split,
                "captions_per_image": self.captions_per_image}

    @property
    def batch(self) -> ShapesBatch:
        if self._batch is None:
            self._batch = render_shapes(self.n, self.seed, self.split, self.captions_per_image)
        return self._batch

    images = property(lambda self: self.batch.images)
    captions = property(lambda self: self.batch.captions)
    attributes = property(lambda self: self.batch.attributes)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from PIL import Image

        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} shapes pairs")
        i = i % self.n
        return Image.fromarray(self.images[i]), list(self.captions[i]), i

    def __iter__(self) -> Iterator:
        for i in range(self.n):
            yield self[i]

    def __repr__(self) -> str:
        return f"ShapesPairs(n={self.n}, seed={self.seed}, split={self.split!r}, captions_per_image={self.captions_per_image})"
