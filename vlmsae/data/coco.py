"""COCO captions: an annotation JSON (``captions_<split>.json``) plus an image folder.

Layout looked for under ``root`` (the standard COCO download)::

    root/annotations/captions_val2017.json
    root/val2017/000000000139.jpg        (or root/images/val2017/..., or root/...)

Items are the annotated images in increasing image id; each item's captions are its
annotations in increasing annotation id (about 5 per image in COCO).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .base import DataNotFoundError, PairSource, file_fingerprint, open_image


def find_annotations(root: Path, split: str | None) -> Path:
    """The captions file of ``split`` under ``root``; the only one when ``split`` is None."""
    folder = root / "annotations" if (root / "annotations").is_dir() else root
    if split is not None:
        path = folder / f"captions_{split}.json"
        if not path.is_file():
            raise DataNotFoundError(f"COCO captions file {path} not found; give annotations=<path to the JSON>")
        return path
    found = sorted(folder.glob("captions_*.json"))
    if not found:
        raise DataNotFoundError(
            f"no captions_*.json under {folder}; a COCO folder holds annotations/captions_<split>.json "
            "(or pass annotations=<path>)")
    if len(found) > 1:
        splits = [p.stem.removeprefix("captions_") for p in found]
        raise ValueError(f"{folder} holds several COCO splits {splits}; choose one with split=...")
    return found[0]


class CocoCaptions(PairSource):
    """COCO-format image-caption pairs.

    Parameters: ``root`` (COCO folder), ``split`` (e.g. ``"val2017"``; optional when only one
    captions file is there), ``annotations`` / ``images`` to override the paths, ``limit`` to keep
    the first ``limit`` images, ``on_error`` ("skip" or "fail") for unreadable images.
    """

    def __init__(self, root: str | Path, split: str | None = None, annotations: str | Path | None = None,
                 images: str | Path | None = None, limit: int | None = None, on_error: str = "skip"):
        super().__init__(on_error)
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataNotFoundError(f"COCO folder {self.root} does not exist")
        self.annotations = Path(annotations).resolve() if annotations else find_annotations(self.root, split)
        self.split = split or self.annotations.stem.removeprefix("captions_")
        content = json.loads(self.annotations.read_text())
        if not isinstance(content, dict) or "images" not in content or "annotations" not in content:
            raise ValueError(f"{self.annotations} is not a COCO captions file: it needs 'images' and 'annotations'")
        self.images_dir = Path(images).resolve() if images else self._find_images_dir()
        captions = defaultdict(list)
        for ann in sorted(content["annotations"], key=lambda a: a.get("id", 0)):
            captions[ann["image_id"]].append(str(ann["caption"]).strip())
        files = {img["id"]: img["file_name"] for img in content["images"]}
        records = [(files[i], tuple(captions[i]), i) for i in sorted(files) if captions.get(i)]
        if limit is not None:
            records = records[: int(limit)]
        self._records, self.limit = records, limit

    def _find_images_dir(self) -> Path:
        for candidate in (self.root / self.split, self.root / "images" / self.split, self.root / "images", self.root):
            if candidate.is_dir():
                return candidate
        return self.root

    @property
    def config(self) -> dict:
        return {"source": "coco", "annotations": str(self.annotations), "images": str(self.images_dir),
                "limit": self.limit, "fingerprint": file_fingerprint(self.annotations)}

    def _load_image(self, file_name, item_id):
        return open_image(self.images_dir / file_name, item_id)
