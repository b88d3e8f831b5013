"""Planted two-modality data: paired image and text embeddings with the paper's structure built in.

Every embedding is a non-negative sparse combination of planted concepts plus a modality
offset, L2-normalised like real VLM embeddings:

    image = normalise(z_img D + (gap / 2) o + noise)      text = normalise(z_txt D - (gap / 2) o + noise)

The concepts D (unit rows, all orthogonal to the offset direction o; shared concepts also
orthogonal to every modality-specific one) come in five blocks, in this order of rows:

    shared        fire for images and texts of the same scene (modality-blind directions)
    bridge image  image-only; bridge image b always co-fires with bridge text b on a pair
    image only    image-only, unpaired
    bridge text   text-only; cosine(bridge image b, bridge text b) = bridge_cosine > 0.5
    text only     text-only, unpaired

Each scene (image) draws, without replacement within each block, k_shared shared concepts,
k_bridge bridges and k_image image-only concepts; each of its captions reuses the scene's
shared concepts and bridges (the text side of each bridge) and draws k_text text-only
concepts of its own. Within a block, concept r (0-based) is drawn with probability
proportional to (r + 1)^-zipf_exponent (bridges: bridge_zipf_exponent): a few frequent
concepts, many rare ones. Weights are
Uniform(0.5, 1.5), drawn separately for the image and for each caption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .synthetic import random_unit_rows

MODALITIES = ("shared", "image", "text")


@dataclass
class TwoModalityData:
    """Planted embeddings and their truth.

    images: (n_images, d), texts: (n_texts, d); unit rows, float32.
    pairing: (n_texts,) long, the image each text describes (texts[r] pairs with images[pairing[r]]).
    dictionary: (c, d) unit-norm planted concepts, orthogonal to offset_direction.
    modality: (c,) numpy array of "shared", "image" or "text".
    image_codes: (n_images, c), text_codes: (n_texts, c): non-negative codes, already divided by
        each embedding's normalising norm, so images = image_codes @ dictionary
        + image_offset[:, None] * offset_direction (+ normalised noise); likewise for texts.
    image_offset: (n_images,) positive, text_offset: (n_texts,) negative offset coefficients.
    offset_direction: (d,) unit vector, the planted modality gap.
    bridges: (n_bridges, 2) long, rows (image concept, text concept).
    frequency: (c,) the Zipf sampling weight of each concept within its block (sums to 1 per block).
    """

    images: torch.Tensor
    texts: torch.Tensor
    pairing: torch.Tensor
    dictionary: torch.Tensor
    modality: np.ndarray
    image_codes: torch.Tensor
    text_codes: torch.Tensor
    image_offset: torch.Tensor
    text_offset: torch.Tensor
    offset_direction: torch.Tensor
    bridges: torch.Tensor
    frequency: torch.Tensor

    def concepts(self, modality: str) -> torch.Tensor:
        """Indices of the planted concepts of one modality: "shared", "image" or "text"."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        return torch.from_numpy(np.flatnonzero(self.modality == modality))

    def paired_images(self) -> torch.Tensor:
        """(n_texts, d): the image of each text, so row r pairs with texts[r] (for the bridge)."""
        return self.images[self.pairing]

    def paired_image_codes(self) -> torch.Tensor:
        return self.image_codes[self.pairing]


def two_modality_data(
    n_images: int = 2000,
    d: int = 64,
    *,
    n_shared: int = 16,
    n_bridges: int = 8,
    n_image_only: int = 8,
    n_text_only: int = 8,
    k_shared: int = 3,
    k_bridge: int = 1,
    k_image: int = 2,
    k_text: int = 2,
    captions_per_image: int = 1,
    gap: float = 2.0,
    bridge_cosine: float = 0.6,
    zipf_exponent: float = 1.0,
    bridge_zipf_exponent: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> TwoModalityData:
    """Paired image/text embeddings from planted shared, image-only, text-only and bridge concepts.

    gap: distance between the image and text offsets (+gap/2 and -gap/2 along o) before
    normalisation. noise: expected norm of the isotropic Gaussian noise added before
    normalisation. bridge_zipf_exponent: the bridges' own frequency law, flat by default: under a
    shuffled image-text pairing a bridge's co-activation falls from p_b to p_b^2, and only
    bridges that are each not too frequent then drop below the chance co-activation of frequent
    unrelated concepts, which is the control the bridge tests rely on. See the module docstring.
    """
    _check_arguments(locals())
    generator = torch.Generator().manual_seed(seed)
    blocks = {"shared": n_shared, "bridge_image": n_bridges, "image": n_image_only, "bridge_text": n_bridges, "text": n_text_only}
    starts = dict(zip(blocks, np.cumsum([0, *blocks.values()])[:-1].tolist()))
    c = sum(blocks.values())

    offset = random_unit_rows(1, d, generator)[0]
    dictionary = _orthogonal_to(random_unit_rows(c, d, generator), offset[None])
    # Bridge text b = bridge_cosine * bridge image b + a unit part orthogonal to it and to o.
    bridge_images = dictionary[starts["bridge_image"] : starts["bridge_image"] + n_bridges]
    free = _orthogonal_to(random_unit_rows(n_bridges, d, generator), offset[None])
    free = free - (free * bridge_images).sum(1, keepdim=True) * bridge_images
    free = free / free.norm(dim=1, keepdim=True)
    dictionary[starts["bridge_text"] : starts["bridge_text"] + n_bridges] = bridge_cosine * bridge_images + (1 - bridge_cosine**2) ** 0.5 * free
    # Shared concepts are orthogonal to o and to every modality-specific concept, so that their
    # projections have the same distribution for images and texts (modality-blind directions).
    specific = dictionary[n_shared:]
    dictionary[:n_shared] = _orthogonal_to(dictionary[:n_shared], torch.cat([specific, offset[None]]))

    exponents = {"shared": zipf_exponent, "bridge_image": bridge_zipf_exponent, "image": zipf_exponent,
                 "bridge_text": bridge_zipf_exponent, "text": zipf_exponent}
    frequency = torch.cat([_zipf(size, exponents[block]) for block, size in blocks.items()])
    n_texts = n_images * captions_per_image
    pairing = torch.arange(n_images).repeat_interleave(captions_per_image)

    image_codes = torch.zeros(n_images, c)
    text_codes = torch.zeros(n_texts, c)
    shared = _draw(n_images, starts["shared"], n_shared, k_shared, zipf_exponent, generator)
    bridges = _draw(n_images, 0, n_bridges, k_bridge, bridge_zipf_exponent, generator)
    image_only = _draw(n_images, starts["image"], n_image_only, k_image, zipf_exponent, generator)
    text_only = _draw(n_texts, starts["text"], n_text_only, k_text, zipf_exponent, generator)
    for codes, support in (
        (image_codes, shared),
        (image_codes, bridges + starts["bridge_image"]),
        (image_codes, image_only),
        (text_codes, shared[pairing]),
        (text_codes, bridges[pairing] + starts["bridge_text"]),
        (text_codes, text_only),
    ):
        codes.scatter_(1, support, 0.5 + torch.rand(support.shape, generator=generator))

    images, image_codes, image_offset = _embed(image_codes, dictionary, offset, gap / 2, noise, generator)
    texts, text_codes, text_offset = _embed(text_codes, dictionary, offset, -gap / 2, noise, generator)
    modality = np.array(["shared"] * n_shared + ["image"] * (n_bridges + n_image_only) + ["text"] * (n_bridges + n_text_only))
    bridge_pairs = torch.stack([torch.arange(n_bridges) + starts["bridge_image"], torch.arange(n_bridges) + starts["bridge_text"]], dim=1)
    return TwoModalityData(
        images=images,
        texts=texts,
        pairing=pairing,
        dictionary=dictionary,
        modality=modality,
        image_codes=image_codes,
        text_codes=text_codes,
        image_offset=image_offset,
        text_offset=text_offset,
        offset_direction=offset,
        bridges=bridge_pairs,
        frequency=frequency,
    )


def _check_arguments(args: dict) -> None:
    if args["n_images"] <= 0 or args["d"] <= 0:
        raise ValueError(f"n_images and d must be positive, got n_images={args['n_images']}, d={args['d']}")
    if args["captions_per_image"] < 1:
        raise ValueError(f"captions_per_image must be at least 1, got {args['captions_per_image']}")
    for pool, k in (("n_shared", "k_shared"), ("n_bridges", "k_bridge"), ("n_image_only", "k_image"), ("n_text_only", "k_text")):
        if not 0 <= args[k] <= args[pool]:
            raise ValueError(f"{k}={args[k]} must be between 0 and {pool}={args[pool]}: a row cannot draw more concepts than exist")
    specific = 2 * args["n_bridges"] + args["n_image_only"] + args["n_text_only"]
    if specific + 2 > args["d"]:
        raise ValueError(
            f"{specific} modality-specific concepts, the offset and the shared concepts' own subspace need "
            f"d >= {specific + 2}, got d={args['d']}: raise d or plant fewer concepts"
        )
    if not 0.5 < args["bridge_cosine"] < 1:
        raise ValueError(f"bridge_cosine must be in (0.5, 1), got {args['bridge_cosine']}")
    if min(args["gap"], args["noise"], args["zipf_exponent"], args["bridge_zipf_exponent"]) < 0:
        raise ValueError("gap, noise, zipf_exponent and bridge_zipf_exponent must be non-negative")


def _orthogonal_to(rows: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Rows with their component in the span of the rows of `span` removed, renormalised."""
    basis, _ = torch.linalg.qr(span.T.double())  # (d, m) orthonormal columns
    rows = rows.double() - (rows.double() @ basis) @ basis.T
    return (rows / rows.norm(dim=1, keepdim=True)).float()


def _zipf(size: int, exponent: float) -> torch.Tensor:
    """Weights proportional to (rank + 1)^-exponent, summing to 1."""
    weights = torch.arange(1, size + 1, dtype=torch.float64) ** -exponent
    return (weights / weights.sum()).float() if size else torch.zeros(0)


def _draw(rows: int, first: int, size: int, k: int, exponent: float, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) concept indices first..first+size-1, Zipf-weighted, distinct within a row."""
    if k == 0:
        return torch.zeros(rows, 0, dtype=torch.long)
    weights = _zipf(size, exponent).expand(rows, size)
    return torch.multinomial(weights, k, replacement=False, generator=generator) + first


def _embed(codes, dictionary, offset, offset_coefficient, noise, generator):
    """L2-normalised codes @ dictionary + offset_coefficient * offset (+ noise); returns scaled truth."""
    raw = codes @ dictionary + offset_coefficient * offset
    if noise > 0:
        raw = raw + noise / dictionary.shape[1] ** 0.5 * torch.randn(raw.shape, generator=generator)
    norms = raw.norm(dim=1, keepdim=True)
    return raw / norms, codes / norms, offset_coefficient / norms[:, 0]
