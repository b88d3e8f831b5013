"""A content-keyed artifact cache shared by notebooks: results are asked for, not recomputed.

    value = get_or_compute("pareto", {"model": "toyclip", "c": 256}, compute, kind="json")

The key hashes the parts *and* the fingerprint of vlmsae's own source code, so a change of
parameters or of code gives a new key: a figure is never drawn from a stale result. Artifacts
live under `$VLMSAE_CACHE/artifacts` (default `~/.cache/vlmsae/artifacts`) and are written
atomically: an interrupted computation leaves nothing behind that a later call would trust.

Kinds: "json" (a JSON-able dict), "arrays" (a dict of numpy arrays, stored as .npz without
pickle), "sae" (an SAE, stored with `SAE.save`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .atomic import atomic_path, atomic_write_text

KINDS = ("json", "arrays", "sae")


def cache_dir(name: str) -> Path:
    """`$VLMSAE_CACHE/<name>` (default `~/.cache/vlmsae/<name>`): the one home of every cache."""
    return Path(os.environ.get("VLMSAE_CACHE", "~/.cache/vlmsae")).expanduser() / name


def cache_root() -> Path:
    return cache_dir("artifacts")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over every .py file of the package (path and content)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(name: str, parts: dict) -> str:
    blob = json.dumps({"name": name, "parts": parts, "code": code_fingerprint()}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def get_or_compute(name: str, parts: dict, compute: Callable[[], Any], *, kind: str = "json",
                   root: str | os.PathLike | None = None) -> Any:
    """The cached value for (name, parts), computing and storing it on the first call."""
    if kind not in KINDS:
        raise ValueError(f"unknown cache kind {kind!r}: use one of {KINDS}")
    root = Path(root) if root is not None else cache_root()
    path = root / cache_key(name, parts)
    if path.exists():
        return _load(path, kind)
    value = compute()
    _store(path, kind, value, parts)
    return _load(path, kind)


def _store(path: Path, kind: str, value, parts: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        if kind == "json":
            atomic_write_text(staging / "value.json", json.dumps(value))
        elif kind == "arrays":
            with atomic_path(staging / "value.npz") as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **{key: np.asarray(array) for key, array in value.items()})
        else:
            value.save(staging / "sae")
        atomic_write_text(staging / "parts.json", json.dumps(parts, sort_keys=True, default=str, indent=1))
        try:
            os.rename(staging, path)  # the whole folder appears at once
        except OSError:
            if not path.exists():  # lost a race with another writer otherwise: theirs is as good
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load(path: Path, kind: str):
    if kind == "json":
        return json.loads((path / "value.json").read_text())
    if kind == "arrays":
        with np.load(path / "value.npz", allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    from .sae import load_sae

    return load_sae(path / "sae")
