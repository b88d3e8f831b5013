"""The heavy steps of every figure, cached by their inputs so notebooks share them.

    emb = embeddings("toyclip", "shapes", n_pairs=20_000)          # EmbeddingSet (memory-mapped)
    sae = train(emb, "batchtopk", c=256, k=8, seed=0, steps=3000)  # trained once, then loaded
    codes = encode(sae, emb)                                       # sparse CSR codes per modality

The first call computes and stores; the same call from any notebook (or a rebuild of the book)
loads the result in milliseconds. Keys include vlmsae's code fingerprint (`cache.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import cache
from .codes import encode_codes
from .embed import EmbeddingSet, get_or_extract
from .sae import SAE, BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE
from .train import train_sae

SAE_KINDS: dict[str, type[SAE]] = {
    "topk": TopKSAE, "batchtopk": BatchTopKSAE, "jumprelu": JumpReLUSAE, "relu": ReLUSAE,
}


def embeddings(model: str = "toyclip", data: str = "shapes", *, n_pairs: int | None = None, seed: int = 0,
               device: str = "cpu", batch_size: int = 256, data_kwargs: dict | None = None) -> EmbeddingSet:
    """The cached embedding set of `model` on `data`.

    For the embedded `shapes` world, `n_pairs` and `seed` choose how many image-caption pairs
    are rendered; other sources take their own options through `data_kwargs`.
    """
    data_kwargs = dict(data_kwargs or {})
    if data == "shapes":
        data_kwargs.setdefault("n", int(n_pairs or 20_000))
        data_kwargs.setdefault("seed", seed)
    return get_or_extract(model, data, device=device, batch_size=batch_size, data_kwargs=data_kwargs)


def training_rows(emb: EmbeddingSet, ratio=None, n: int | None = None, seed: int = 0) -> np.ndarray:
    """Rows an SAE trains on: every image and caption embedding, or a mixture at image:text `ratio`."""
    if ratio is None:
        return emb.all if n is None else emb.mixture((emb.n_image, emb.n_text), n=n, seed=seed).data
    return emb.mixture(ratio, n=n, seed=seed).data


def make_sae(kind: str, d: int, c: int, k: int | None = None, **sae_kwargs) -> SAE:
    if kind not in SAE_KINDS:
        raise ValueError(f"unknown SAE kind {kind!r}: use one of {sorted(SAE_KINDS)}")
    if kind in ("topk", "batchtopk"):
        if k is None:
            raise ValueError(f"a {kind} SAE needs k (non-zeros per example)")
        return SAE_KINDS[kind](d, c, k, **sae_kwargs)
    return SAE_KINDS[kind](d, c, **sae_kwargs)


def train(emb: EmbeddingSet, kind: str = "batchtopk", *, c: int, k: int | None = None, seed: int = 0,
          ratio=None, n_train: int | None = None, steps: int = 3000, batch_size: int = 1024, lr: float = 1e-3,
          device: str = "cpu", progress: bool = False, **sae_kwargs) -> SAE:
    """An SAE trained on `emb` (all rows, or a mixture at image:text `ratio`), cached by every input."""
    parts = {
        "embeddings": emb.path.name, "checksum": emb.manifest["checksums"]["embeddings.npy"], "kind": kind,
        "c": c, "k": k, "seed": seed, "ratio": None if ratio is None else str(ratio), "n_train": n_train,
        "steps": steps, "batch_size": batch_size, "lr": lr, "sae_kwargs": sae_kwargs,
    }

    def compute() -> SAE:
        rows = training_rows(emb, ratio, n_train, seed)
        torch.manual_seed(seed)
        sae = make_sae(kind, emb.dim, c, k, **sae_kwargs)
        train_sae(sae, rows, steps=steps, batch_size=min(batch_size, len(rows)), lr=lr, seed=seed,
                  device=device, progress=progress)
        return sae.cpu()

    return cache.get_or_compute("sae", parts, compute, kind="sae")


@dataclass
class CodeSet:
    """Sparse CSR codes of an embedding set: `image` (n_img, c), `text` (n_txt, c) and
    `paired_image` (n_txt, c), the image codes repeated per caption (row r pairs with text row r)."""

    image: torch.Tensor
    text: torch.Tensor
    paired_image: torch.Tensor


def encode(sae: SAE, emb: EmbeddingSet, *, device: str = "cpu") -> CodeSet:
    image = encode_codes(sae, emb.image, device=device)
    text = encode_codes(sae, emb.text, device=device)
    pairs = np.asarray(emb.pairs)
    image_of_text_row = pairs[np.argsort(pairs[:, 1], kind="stable"), 0]  # each caption appears once
    paired_image = encode_codes(sae, np.asarray(emb.image)[image_of_text_row], device=device)
    return CodeSet(image=image, text=text, paired_image=paired_image)
