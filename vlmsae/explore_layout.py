"""2-D positions of an SAE's concepts for the explorer's map, cached on disk.

    xy = concept_layout(sae.dictionary, method="umap")      # (c, 2) float32

method="umap": UMAP (umap-learn) of the decoder rows with the cosine metric, the paper's
concept map. Its first call in a process spends 15-70 s compiling numba code, so the result
is stored under ``$VLMSAE_CACHE/explorer_layouts/<key>.npy`` (default ``~/.cache/vlmsae``),
the key being sha256 of the dictionary's float32 bytes and the UMAP settings: a second build
of the same dictionary reads it back in milliseconds without importing umap.

method="pca": the first two principal components of the unit decoder rows (centred), in
milliseconds and without numba: for tests and quick previews. Signs are fixed so that the
largest-magnitude loading of each component is positive (the same dictionary always gives the
same picture).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from vlmsae.atomic import atomic_path

METHODS = ("umap", "pca")


def default_layout_cache() -> Path:
    from vlmsae.cache import cache_dir

    return cache_dir("explorer_layouts")


def unit_rows(dictionary) -> np.ndarray:
    """The dictionary as a float32 (c, d) numpy array with unit L2 rows (zero rows stay zero)."""
    D = dictionary.detach().float().cpu().numpy() if isinstance(dictionary, torch.Tensor) else np.asarray(dictionary, np.float32)
    if D.ndim != 2 or D.shape[0] == 0:
        raise ValueError(f"the dictionary must be a non-empty (c, d) matrix, got shape {D.shape}")
    if not np.isfinite(D).all():
        raise ValueError("the dictionary holds NaN or infinite values: the SAE diverged; retrain it")
    norms = np.linalg.norm(D, axis=1, keepdims=True)
    return (D / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)


def pca_layout(D: np.ndarray) -> np.ndarray:
    """(c, 2) scores on the first two principal components of the rows of D (zeros past rank)."""
    centred = D.astype(np.float64) - D.mean(axis=0, dtype=np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    scores = centred @ (components * signs[:, None]).T
    out = np.zeros((D.shape[0], 2), np.float32)
    out[:, : scores.shape[1]] = scores
    return out


def umap_layout(D: np.ndarray, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """(c, 2) UMAP embedding of the rows of D, cosine metric (not cached: see `concept_layout`)."""
    if D.shape[0] < 4:
        # UMAP's spectral initialisation needs a few points; a 2-3 point map is a PCA anyway.
        return pca_layout(D)
    import umap  # imported here: numba compilation is only paid when UMAP is really run

    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(n_neighbors, D.shape[0] - 1),
                        min_dist=min_dist, random_state=seed, init="spectral" if D.shape[0] > 16 else "random")
    with warnings.catch_warnings():  # a fixed random_state makes umap run single-threaded, and it says so
        warnings.filterwarnings("ignore", message="n_jobs value")
        return reducer.fit_transform(D).astype(np.float32)


def layout_key(D: np.ndarray, settings: dict) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(D, dtype=np.float32).tobytes())
    digest.update(json.dumps({"shape": list(D.shape), **settings}, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def concept_layout(dictionary, method: str = "umap", *, n_neighbors: int = 15, min_dist: float = 0.1,
                   seed: int = 0, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """(c, 2) float32 map positions of the concepts (rows of `dictionary`), see the module doc."""
    if method not in METHODS:
        raise ValueError(f"layout must be one of {METHODS} ('pca' is the fast one), got {method!r}")
    D = unit_rows(dictionary)
    if method == "pca":
        return pca_layout(D)
    settings = {"method": "umap", "metric": "cosine", "n_neighbors": int(n_neighbors), "min_dist": float(min_dist),
                "seed": int(seed)}
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_layout_cache()
    path = path / f"{layout_key(D, settings)}.npy"
    if path.is_file():
        try:
            xy = np.load(path, allow_pickle=False)
            if xy.shape == (D.shape[0], 2) and np.isfinite(xy).all():
                return xy.astype(np.float32)
        except (OSError, ValueError):
            pass  # written atomically, so a bad file is damage: compute again and overwrite
    xy = umap_layout(D, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.save would append '.npy' to a name
            np.save(handle, xy)
    return xy
