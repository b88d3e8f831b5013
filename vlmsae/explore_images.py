"""Images for the explorer's thumbnails: re-open an embedding set's pair source, re-encode small.

An `EmbeddingSet` stores embeddings, not pixels. Its manifest's ``data`` entry is the source's
``config`` (`vlmsae.data.describe`), enough to open the same source again through
`vlmsae.data.load`: the ``shapes`` world renders again from its seed, file-backed sources
(COCO, folder index, saved HF data set) open their files. The re-opened source must describe
itself exactly as at extraction time (same files, same fingerprints), and every fetched item
must carry the id stored for that image row; otherwise the images are "unavailable" with the
reason, never silently mismatched.

Thumbnails are re-encoded with Pillow (never copied bytes): fit inside ``size`` x ``size``
pixels without upscaling, PNG when both sides are at most 64 pixels (small synthetic images
compress best losslessly), else JPEG at ``jpeg_quality``; embedded as base64 data URIs.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

PNG_MAX_SIDE = 64


class ImagesUnavailable(Exception):
    """The images of an embedding set cannot be shown; the message says why."""


def _reopen(description: dict):
    from vlmsae import data as data_registry

    source = description.get("source")
    if source == "shapes":
        kwargs = {key: description[key] for key in ("n", "seed", "split", "captions_per_image") if key in description}
        return data_registry.load("shapes", **kwargs)
    if source == "coco":
        from pathlib import Path

        annotations = Path(description["annotations"])
        return data_registry.load(f"coco:{annotations.parent}", annotations=str(annotations),
                                  images=description["images"], limit=description.get("limit"))
    if source == "folder":
        return data_registry.load(f"folder:{description['index']}")
    if source == "hf_dataset":
        return data_registry.load(f"hf:{description['path']}", split=description.get("split"),
                                  image_column=description.get("image_column"),
                                  caption_column=description.get("caption_column"))
    raise ImagesUnavailable(f"the data source {description!r} cannot be re-opened from its description; "
                            "pass images=... (a callable image row -> image, or a list) to build_explorer")


def _same_id(a, b) -> bool:
    # ids went through JSON in the embedding cache (tuples became lists): compare in that form
    return json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str))


def source_images(embeddings) -> Callable[[int], Any]:
    """get(image_row) -> PIL image of that row of ``embeddings.image``, from its re-opened source.

    Raises ImagesUnavailable when the source cannot be opened or has changed since extraction.
    """
    from vlmsae.data import describe

    description = embeddings.data
    try:
        source = _reopen(description)
    except ImagesUnavailable:
        raise
    except Exception as err:  # a missing folder, a moved file, a missing optional package
        raise ImagesUnavailable(f"the data source cannot be opened again ({type(err).__name__}: {err})") from None
    if describe(source) != description:
        raise ImagesUnavailable("the data source has changed since the embeddings were extracted "
                                f"(now {describe(source)!r}, then {description!r})")
    ids = embeddings.ids
    id_of = getattr(source, "id_of", None)
    if id_of is not None:
        index = {json.dumps(id_of(i), default=str, sort_keys=True): i for i in range(len(source))}
        position = [index.get(json.dumps(item_id, default=str, sort_keys=True)) for item_id in ids]
    else:
        position = list(range(len(ids)))  # sources without id_of (shapes) use the item index as id

    def get(row: int):
        where = position[row]
        if where is None or where >= len(source):
            raise ImagesUnavailable(f"image row {row} (id {ids[row]!r}) is no longer in the data source")
        image, _, item_id = source[where]
        if not _same_id(item_id, ids[row]):
            raise ImagesUnavailable(f"image row {row} should be item {ids[row]!r} but the source gives {item_id!r}")
        return image

    return get


def explicit_images(images, n_image: int) -> Callable[[int], Any]:
    """get(row) over a user-given callable, or a sequence / (n, H, W[, 3]) array of images."""
    if callable(images):
        return images
    if hasattr(images, "__len__") and hasattr(images, "__getitem__"):
        if len(images) != n_image:
            raise ValueError(f"images has {len(images)} entries but the embedding set has {n_image} image rows: "
                             "pass one image per row of embeddings.image, in that order")
        return lambda row: images[row]
    raise ValueError(f"images must be a callable (image row -> image), a sequence of images, or None; "
                     f"got {type(images).__name__}")


def _as_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        # float images in [0, 1] (the shapes world's convention) become 0..255
        array = np.clip(np.rint(array.astype(np.float64) * (255 if array.max(initial=0) <= 1 else 1)), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)  # channels-first tensor layout
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"an image must be a PIL image or an (H, W) / (H, W, 3) array, got shape {array.shape}")
    return Image.fromarray(array).convert("RGB")


def thumbnail_uri(image, size: int = 96, jpeg_quality: int = 80) -> str:
    """The image re-encoded as a small PNG or JPEG data URI (see the module doc)."""
    from PIL import Image

    picture = _as_pil(image)
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)  # shrinks only, keeps the aspect ratio
    buffer = io.BytesIO()
    if max(picture.size) <= PNG_MAX_SIDE:
        picture.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        picture.save(buffer, format="JPEG", quality=jpeg_quality, optimize=True)
        kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def make_thumbnails(rows, get: Callable[[int], Any], *, size: int = 96, jpeg_quality: int = 80,
                    progress: bool = False) -> dict[int, str]:
    """{image row: data URI} for every row in ``rows``; ImagesUnavailable from ``get`` propagates,
    any other failure to read one image leaves that row out (its panel shows no picture)."""
    from vlmsae.data import UnreadableImageError

    out = {}
    for row in tqdm(sorted(set(int(r) for r in rows)), desc="thumbnails", disable=not progress):
        try:
            out[row] = thumbnail_uri(get(row), size=size, jpeg_quality=jpeg_quality)
        except UnreadableImageError:
            continue
    return out
