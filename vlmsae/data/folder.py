"""A folder of images with an index file: JSONL or CSV rows of ``image, caption``.

JSONL rows: ``{"image": "cats/1.jpg", "caption": "a cat"}`` or ``"captions": [...]``, with an
optional ``"id"``. CSV: a header with ``image`` and ``caption`` columns (``id`` optional).
Image paths are relative to the index file's folder (or absolute). Rows naming the same image
are one item with several captions, in the order the image first appears.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .base import DataNotFoundError, PairSource, file_fingerprint, open_image

INDEX_SUFFIXES = (".jsonl", ".csv")


def find_index(path: Path) -> Path:
    if path.is_file():
        if path.suffix not in INDEX_SUFFIXES:
            raise ValueError(f"{path} is not a .jsonl or .csv index of image, caption rows")
        return path
    if not path.is_dir():
        raise DataNotFoundError(f"{path} does not exist")
    found = sorted(p for p in path.iterdir() if p.suffix in INDEX_SUFFIXES)
    if len(found) != 1:
        what = "no" if not found else f"several ({', '.join(p.name for p in found)})"
        raise ValueError(f"{path} holds {what} .jsonl/.csv index files; pass the index file itself")
    return found[0]


def _rows(index: Path):
    if index.suffix == ".jsonl":
        with index.open() as handle:
            for line_no, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield line_no, json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{index}:{line_no} is not valid JSON ({err})") from None
    else:
        with index.open(newline="") as handle:
            for line_no, row in enumerate(csv.DictReader(handle), 2):
                yield line_no, row


class FolderPairs(PairSource):
    """Image-caption pairs listed in a JSONL/CSV index (see the module docstring)."""

    def __init__(self, path: str | Path, on_error: str = "skip"):
        super().__init__(on_error)
        self.index = find_index(Path(path).expanduser().resolve())
        order, captions, ids = [], {}, {}
        for line_no, row in _rows(self.index):
            if not isinstance(row, dict) or not row.get("image") or not (row.get("caption") or row.get("captions")):
                raise ValueError(f"{self.index}:{line_no} needs an 'image' and a 'caption' (or 'captions' list)")
            image = str(row["image"])
            texts = row.get("captions") or [row["caption"]]
            if isinstance(texts, str):
                texts = [texts]
            if image not in captions:
                order.append(image)
                captions[image], ids[image] = [], row.get("id") or image
            captions[image].extend(str(t).strip() for t in texts)
        self._records = [(image, tuple(captions[image]), ids[image]) for image in order]

    @property
    def config(self) -> dict:
        return {"source": "folder", "index": str(self.index), "fingerprint": file_fingerprint(self.index)}

    def _load_image(self, image, item_id):
        return open_image(self.index.parent / image, item_id)
