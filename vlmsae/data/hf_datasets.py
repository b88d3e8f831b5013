"""A Hugging Face ``datasets`` data set already on this machine, as image-caption pairs.

``path`` is either a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(read with ``load_from_disk``) or a hub name already in the local ``datasets`` cache (read with
``load_dataset`` in offline mode: nothing is downloaded).

Columns are found by type and name unless given: the image column is the one with an ``Image``
feature (or a string column named ``image``/``image_path``/``file_name`` holding paths), the
caption column one of ``caption``, ``captions``, ``text``, ``sentences`` (a string or a list of
strings per row), the id column one of ``id``, ``image_id``, ``cocoid`` (else the row number).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .base import DataNotFoundError, PairSource, UnreadableImageError, open_image

CAPTION_COLUMNS = ("caption", "captions", "text", "sentences", "sentences_raw")
IMAGE_PATH_COLUMNS = ("image", "image_path", "file_name", "filepath")
ID_COLUMNS = ("id", "image_id", "cocoid", "imgid")


@contextlib.contextmanager
def _datasets_offline():
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # the env variable is read at import; switch the constant
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def open_dataset(path: str, split: str | None):
    """The ``datasets.Dataset`` at ``path`` (saved folder or cached hub name), one split."""
    import datasets

    folder = Path(path).expanduser()
    if folder.is_dir():
        data = datasets.load_from_disk(str(folder))
        where = str(folder)
    else:
        try:
            with _datasets_offline():
                data = datasets.load_dataset(path, split=split)
        except (FileNotFoundError, ConnectionError, ValueError) as err:
            raise DataNotFoundError(
                f"data set {path!r} is neither a folder nor in the local datasets cache "
                f"({datasets.config.HF_DATASETS_CACHE}). On a machine with internet run "
                f"python -c \"import datasets; datasets.load_dataset('{path}').save_to_disk('<folder>')\" "
                f"and copy <folder> here. (datasets said: {str(err).splitlines()[0] if str(err) else err!r})"
            ) from None
        where = path
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            if len(data) != 1:
                raise ValueError(f"{where} has splits {list(data)}; choose one with split=...")
            split = next(iter(data))
        if split not in data:
            raise ValueError(f"{where} has no split {split!r}; its splits are {list(data)}")
        data = data[split]
    return data, split


def _pick(columns, wanted, given, what):
    if given is not None:
        if given not in columns:
            raise ValueError(f"{what} column {given!r} is not among the data set's columns {list(columns)}")
        return given
    for name in wanted:
        if name in columns:
            return name
    return None


class HFDatasetPairs(PairSource):
    """Image-caption pairs from a local ``datasets`` data set (see the module docstring)."""

    def __init__(self, path: str | Path, split: str | None = None, image_column: str | None = None,
                 caption_column: str | None = None, id_column: str | None = None, on_error: str = "skip"):
        import datasets

        super().__init__(on_error)
        self.path = str(Path(path).expanduser().resolve()) if Path(path).expanduser().is_dir() else str(path)
        data, self.split = open_dataset(self.path, split)
        columns, features = data.column_names, data.features
        image_features = [c for c in columns if isinstance(features[c], datasets.Image)]
        self.image_column = image_column or (image_features[0] if image_features else
                                             _pick(columns, IMAGE_PATH_COLUMNS, None, "image"))
        if self.image_column is None or self.image_column not in columns:
            raise ValueError(f"no image column found among {columns}; pass image_column=...")
        self.caption_column = _pick(columns, CAPTION_COLUMNS, caption_column, "caption")
        if self.caption_column is None:
            raise ValueError(f"no caption column found among {columns}; pass caption_column=...")
        self.id_column = _pick(columns, ID_COLUMNS, id_column, "id")
        self._is_image_feature = isinstance(features[self.image_column], datasets.Image)
        if self._is_image_feature:
            # decode ourselves, so an unreadable image is an UnreadableImageError like elsewhere
            data = data.cast_column(self.image_column, datasets.Image(decode=False))
        self._data = data
        captions = list(data[self.caption_column])
        ids = list(data[self.id_column]) if self.id_column else list(range(len(data)))
        self._records = [(row, tuple([c] if isinstance(c, str) else (str(x) for x in c)), item_id)
                         for row, (c, item_id) in enumerate(zip(captions, ids))]
        self._fingerprint = getattr(data, "_fingerprint", "")

    @property
    def config(self) -> dict:
        return {"source": "hf_dataset", "path": self.path, "split": self.split, "image_column": self.image_column,
                "caption_column": self.caption_column, "fingerprint": self._fingerprint}

    def _load_image(self, row, item_id):
        value = self._data[row][self.image_column]
        if self._is_image_feature:
            if value is None:
                raise UnreadableImageError(item_id, f"{self.path} row {row}", "no image in this row")
            data, path = value.get("bytes"), value.get("path")
            return open_image(path, item_id, data=data) if data is not None else open_image(path, item_id)
        path = Path(str(value))
        if not path.is_absolute() and Path(self.path).is_dir():
            path = Path(self.path) / path
        return open_image(path, item_id)
