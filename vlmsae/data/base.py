"""What every image-caption pair source shares: records, lazy image loading, error policy.

A pair source is a sequence of ``(PIL image, [captions], id)``: ``len(source)``,
``source[i]`` and iteration. Images are opened only when an item is asked for, so a loader can
fetch items from several threads; ``captions_of(i)`` and ``id_of(i)`` never touch the image.

An image that cannot be read raises ``UnreadableImageError`` from ``source[i]``. Iteration (and
``vlmsae.embed``) applies a policy: ``on_error="skip"`` counts the item in an ``ErrorLog`` and
goes on, ``on_error="fail"`` stops with a ``ValueError`` naming the item.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ON_ERROR = ("skip", "fail")


class UnreadableImageError(OSError):
    """One item's image is missing or cannot be decoded."""

    def __init__(self, item_id: Any, where: str, reason: str):
        self.item_id, self.where, self.reason = item_id, where, reason
        super().__init__(f"image of item {item_id!r} ({where}) cannot be read: {reason}")


class DataNotFoundError(FileNotFoundError):
    """A data set (folder, annotation file, saved HF data set) is not where it was said to be."""


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'skip' (count and go on) or 'fail' (stop), got {on_error!r}")
    return on_error


@dataclass
class ErrorLog:
    """Unreadable items met so far: the count, and the first ``keep`` messages for the report."""

    keep: int = 20
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def handle(self, err: UnreadableImageError, on_error: str) -> None:
        """Record ``err`` under ``on_error='skip'``; raise a ValueError under ``'fail'``."""
        if on_error == "fail":
            raise ValueError(f"{err}. Fix: repair or remove that file, or pass on_error='skip' "
                             "to skip unreadable images (they are counted and reported)") from err
        self.count += 1
        if len(self.examples) < self.keep:
            self.examples.append(str(err))

    def report(self) -> str:
        if not self.count:
            return "all images were read"
        more = f"\n  ... and {self.count - len(self.examples)} more" if self.count > len(self.examples) else ""
        return (f"{self.count} unreadable image(s) were skipped:\n  " + "\n  ".join(self.examples) + more)


def open_image(path: str | os.PathLike | None, item_id: Any, data: bytes | None = None):
    """The RGB PIL image at ``path`` (or in ``data``), fully decoded now so errors surface here."""
    import io

    from PIL import Image

    where = str(path) if path is not None else "<bytes>"
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # missing file, not an image, truncated data
        raise UnreadableImageError(item_id, where, f"{type(err).__name__}: {err}") from None


def file_fingerprint(path: str | os.PathLike) -> str:
    """size-mtime of a file: cheap, and changes when an index or annotation file is edited."""
    stat = Path(path).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


class PairSource:
    """Base of the file-backed pair sources.

    Subclasses fill ``self._records`` with ``(image_ref, captions, id)`` and implement
    ``_load_image(image_ref, item_id)``; ``config`` describes the data for cache keys.
    """

    on_error: str = "skip"
    _records: list[tuple[Any, tuple[str, ...], Any]]

    def __init__(self, on_error: str = "skip"):
        self.on_error = check_on_error(on_error)
        self.errors = ErrorLog()

    @property
    def config(self) -> dict:
        raise NotImplementedError

    def _load_image(self, image_ref: Any, item_id: Any):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._records)

    def captions_of(self, i: int) -> list[str]:
        return list(self._records[i][1])

    def id_of(self, i: int) -> Any:
        return self._records[i][2]

    def __getitem__(self, i: int):
        image_ref, captions, item_id = self._records[i]
        return self._load_image(image_ref, item_id), list(captions), item_id

    def __iter__(self) -> Iterator:
        self.errors = ErrorLog()
        for i in range(len(self)):
            try:
                yield self[i]
            except UnreadableImageError as err:
                self.errors.handle(err, self.on_error)
        if self.errors.count:
            warnings.warn(f"{type(self).__name__}: {self.errors.report()}", stacklevel=2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"
