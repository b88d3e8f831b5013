"""Data registry: ``load(name_or_path)`` gives a pair source of ``(PIL image, [captions], id)``.

Names and paths:

* ``shapes``: the embedded default world (keyword arguments ``n``, ``seed``, ``split``, ...);
* ``coco:<dir>``: COCO captions (``split=``, ``limit=``, ``annotations=``, ``images=``);
* ``folder:<dir or index file>``: a JSONL/CSV index of ``image, caption`` rows;
* ``hf:<saved folder or cached hub name>``: a Hugging Face ``datasets`` data set on this machine;
* a bare path: recognised by its content (a saved ``datasets`` folder, a COCO folder, a folder
  or file with a JSONL/CSV index).

File-backed sources take ``on_error="skip"|"fail"`` for unreadable images.
"""

from __future__ import annotations

from pathlib import Path

from .base import ON_ERROR, DataNotFoundError, ErrorLog, PairSource, UnreadableImageError

FORMS = ("shapes", "coco:<dir>", "folder:<dir or .jsonl/.csv>", "hf:<saved folder or cached name>",
         "<path to any of these>")
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def _shapes(**kwargs):
    from .shapes import ShapesPairs  # imported here: rendering code is not needed for other data

    return ShapesPairs(**kwargs)


def _coco(spec, **kwargs):
    from .coco import CocoCaptions

    return CocoCaptions(spec, **kwargs)


def _folder(spec, **kwargs):
    from .folder import FolderPairs

    return FolderPairs(spec, **kwargs)


def _hf(spec, **kwargs):
    from .hf_datasets import HFDatasetPairs

    return HFDatasetPairs(spec, **kwargs)


_PREFIXES = {"coco": _coco, "folder": _folder, "hf": _hf}


def _by_content(path: Path, **kwargs):
    if path.is_dir() and any((path / marker).is_file() for marker in _HF_MARKERS):
        return _hf(str(path), **kwargs)
    if path.is_dir() and (list(path.glob("annotations/captions_*.json")) or list(path.glob("captions_*.json"))):
        return _coco(str(path), **kwargs)
    return _folder(str(path), **kwargs)


def load(name_or_path, **kwargs):
    """The pair source named by ``name_or_path`` (see the module docstring for the forms)."""
    if name_or_path == "shapes":
        return _shapes(**kwargs)
    text = str(name_or_path)
    prefix, sep, spec = text.partition(":")
    if sep and prefix in _PREFIXES and spec:
        return _PREFIXES[prefix](spec, **kwargs)
    path = Path(text).expanduser()
    if path.exists():
        return _by_content(path, **kwargs)
    raise ValueError(f"unknown data set {text!r}: not a known name and no such path. Known forms: {', '.join(FORMS)}")


def describe(source) -> dict:
    """A JSON-able description of a source for manifests and cache keys: its ``config`` when it
    has one, else only its type and length (a repr may hold memory addresses, which would make
    every run look like new data); give custom sources a ``config`` dict to tell them apart."""
    config = getattr(source, "config", None)
    if isinstance(config, dict):
        return dict(config)
    return {"source": type(source).__name__, "n": len(source)}


__all__ = ["ON_ERROR", "DataNotFoundError", "ErrorLog", "PairSource", "UnreadableImageError", "describe", "load"]
