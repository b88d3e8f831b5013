"""The shapes world: determinism, captions consistent with the ground truth, pixels with the
objects' colours, the noise the world promises, and the pair-source interface."""

import numpy as np
import pytest
from PIL import Image

from vlmsae.data import shapes
from vlmsae.data.shapes import ShapesPairs, render_shapes

WORD_TO_SHAPE = {w: s for s, words in shapes.SHAPE_WORDS.items() for w in words}
WORD_TO_COLOUR = {w: c for c, words in shapes.COLOUR_WORDS.items() for w in words}
WORD_TO_SIZE = {w: s for s, words in shapes.SIZE_WORDS.items() for w in words}


def parse_mentions(caption):
    """(size or None, colour or None, shape) per shape word, read off the words around it:
    '[a] [size] [colour] shape' or '[a] [size] shape that is colour'."""
    words = caption.split()
    out = []
    for i, w in enumerate(words):
        if w not in WORD_TO_SHAPE:
            continue
        j = i - 1
        colour = size = None
        if j >= 0 and words[j] in WORD_TO_COLOUR:
            colour = WORD_TO_COLOUR[words[j]]
            j -= 1
        if j >= 0 and words[j] in WORD_TO_SIZE:
            size = WORD_TO_SIZE[words[j]]
        if words[i + 1:i + 3] == ["that", "is"]:
            assert colour is None, caption
            colour = WORD_TO_COLOUR[words[i + 3]]
        out.append((size, colour, WORD_TO_SHAPE[w]))
    return out


@pytest.fixture(scope="module")
def batch():
    return render_shapes(400, seed=5, captions_per_image=3)


def test_same_seed_same_world_other_seed_or_split_other_world():
    a, b = render_shapes(50, seed=2), render_shapes(50, seed=2)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    for key in a.attributes:
        np.testing.assert_array_equal(a.attributes[key], b.attributes[key])
    c, d = render_shapes(50, seed=3), render_shapes(50, seed=2, split="test")
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions
    assert not np.array_equal(a.images, d.images) and a.captions != d.captions


def test_captions_name_only_objects_of_the_image(batch):
    attrs = batch.attributes
    n_mentions = 0
    for i, caps in enumerate(batch.captions):
        objects = [(shapes.SIZES[attrs["size"][i, s]], shapes.COLOURS[attrs["colour"][i, s]],
                    shapes.SHAPES[attrs["shape"][i, s]]) for s in range(attrs["n_objects"][i])]
        for cap in caps:
            words = cap.split()
            assert {WORD_TO_COLOUR[w] for w in words if w in WORD_TO_COLOUR} <= {o[1] for o in objects}, (cap, objects)
            assert {WORD_TO_SHAPE[w] for w in words if w in WORD_TO_SHAPE} <= {o[2] for o in objects}, (cap, objects)
            mentions = parse_mentions(cap)
            assert 1 <= len(mentions) <= attrs["n_objects"][i]
            for size, colour, shape in mentions:
                n_mentions += 1
                assert any(shape == o[2] and colour in (None, o[1]) and size in (None, o[0]) for o in objects), (cap, objects)
    assert n_mentions > 1000


def test_captions_leave_things_out(batch):
    caps = [c for per_image in batch.captions for c in per_image]
    with_size = np.mean([any(w in WORD_TO_SIZE for w in c.split()) for c in caps])
    with_position = np.mean([any(w in ("left", "right", "top", "bottom", "center", "middle") for w in c.split())
                             for c in caps])
    assert 0.2 < with_size < 0.85 and 0.2 < with_position < 0.85
    two = batch.attributes["n_objects"] == 2
    n_named = np.array([[len(parse_mentions(c)) for c in per_image] for per_image in batch.captions])
    assert 0.15 < np.mean(n_named[two] == 1) < 0.5        # two objects, one named
    assert (n_named[~two] == 1).all()
    # `mentioned` agrees with the number of objects the words name
    np.testing.assert_array_equal(batch.attributes["mentioned"].sum(-1), n_named)


def test_object_pixels_have_the_object_colour(batch):
    attrs, images = batch.attributes, batch.images.astype(np.float64) / 255.0
    checked = 0
    for i in range(len(images)):
        for s in range(attrs["n_objects"][i]):
            x, y = np.floor(attrs["center"][i, s]).astype(int)
            rgb = images[i, y, x] / attrs["brightness"][i]
            nearest = np.argmin(((shapes.PALETTE - rgb) ** 2).sum(1))
            assert nearest == attrs["colour"][i, s], (i, s, rgb)
            checked += 1
    assert checked > 500


def test_images_vary_beyond_what_captions_say(batch):
    attrs = batch.attributes
    assert set(np.unique(attrs["background"])) == set(range(len(shapes.BACKGROUNDS)))
    assert attrs["n_clutter"].max() > 0 and attrs["brightness"].std() > 0.05
    # same caption-relevant content, different pixels: background pixels (corner far from objects)
    # vary a lot across images
    assert batch.images[:, 0, 0].astype(float).std() > 20


def test_pair_source_interface():
    pairs = ShapesPairs(n=6, seed=1, split="test", captions_per_image=2)
    items = list(pairs)
    assert len(pairs) == 6 and len(items) == 6
    image, captions, ident = items[4]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and ident == 4
    assert np.array_equal(np.asarray(image), pairs.images[4]) and captions == pairs.captions[4]
    assert len(captions) == 2
    with pytest.raises(ValueError, match="split"):
        ShapesPairs(n=5, split="validation")
    with pytest.raises(ValueError, match="positive int"):
        ShapesPairs(n=0)


def test_said_masks_match_the_words(batch):
    attrs = batch.attributes
    for i, caps in enumerate(batch.captions[:200]):
        for j, cap in enumerate(caps):
            words = cap.split()
            n_size_words = sum(w in WORD_TO_SIZE for w in words)
            n_colour_words = sum(w in WORD_TO_COLOUR for w in words)
            n_position_phrases = sum(w in ("left", "right", "center", "middle") for w in words) + sum(
                w in ("top", "bottom", "upper", "lower") and (k + 1 == len(words) or words[k + 1] not in ("left", "right"))
                for k, w in enumerate(words))
            assert attrs["said_size"][i, j].sum() == n_size_words, cap
            assert attrs["said_colour"][i, j].sum() == n_colour_words, cap
            assert attrs["said_position"][i, j].sum() == n_position_phrases, cap
