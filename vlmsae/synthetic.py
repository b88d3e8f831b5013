"""Planted-truth data: embeddings built from a known sparse dictionary.

Tests use it to check that an SAE recovers what was planted, and the book uses it as a
sanity page. The two-modality generator of the paper's phenomena lives in `planted.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseData:
    """Data A = Z D (+ noise) with its truth.

    data: (n, d) float32, the observed rows.
    dictionary: (c, d) float32, unit-norm true atoms.
    codes: (n, c) float32, non-negative, exactly k non-zeros per row.
    """

    data: torch.Tensor
    dictionary: torch.Tensor
    codes: torch.Tensor


def random_unit_rows(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """`rows` i.i.d. directions, uniform on the unit sphere of R^dim."""
    directions = torch.randn(rows, dim, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


def sparse_dictionary_data(
    n: int,
    d: int,
    c: int,
    k: int,
    *,
    noise: float = 0.0,
    seed: int = 0,
) -> SparseData:
    """Rows that are non-negative combinations of exactly k of c random unit atoms.

    Each row picks k distinct atoms uniformly and weights them by Uniform(0.5, 1.5), so every
    atom is used about n*k/c times and no code is close to zero. Gaussian noise of standard
    deviation `noise / sqrt(d)` per coordinate is added (noise is the expected noise norm).
    """
    if not 0 < k <= c:
        raise ValueError(f"need 0 < k <= c, got k={k}, c={c}")
    generator = torch.Generator().manual_seed(seed)
    dictionary = random_unit_rows(c, d, generator)
    support = torch.rand(n, c, generator=generator).argsort(dim=1)[:, :k]
    weights = 0.5 + torch.rand(n, k, generator=generator)
    codes = torch.zeros(n, c).scatter_(1, support, weights)
    data = codes @ dictionary
    if noise > 0:
        data = data + noise / d**0.5 * torch.randn(n, d, generator=generator)
    return SparseData(data=data, dictionary=dictionary, codes=codes)
