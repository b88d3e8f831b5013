"""Per-concept facts for the explorer, from sparse codes: the paper's metrics plus what a panel shows.

    stats = concept_stats(embeddings, sae)       # ConceptStats

Codes are computed once per modality with `vlmsae.codes.encode_codes` (sparse CSR), and the
paper's numbers come from `vlmsae.metrics` on those codes, never re-derived here:

* energy_i = mean of z_i over all rows (images and texts): `metrics.energy`;
* modality score_i = E_img[z_i] / (E_img[z_i] + E_txt[z_i]): `metrics.modality_score`;
* classifier accuracy_i: `metrics.modality_classifier_accuracy` (on at most
  `classifier_rows` rows per modality, a seeded sample, because it sorts (rows, c) projections);
* bridge matrix B over the matched pairs and its top pairs: `metrics.bridge_matrix`,
  `metrics.top_bridges`.

What the panel adds, computed here from the CSR arrays (vectorised, no per-concept loops):
firing frequency_i = |{rows r : z_ri > 0}| / n_rows, the top-activating rows of each concept per
modality, a histogram of each concept's non-zero activations per modality on bins shared by
both modalities (bin b covers [b, b+1) * max_i / n_bins, the maximum falls in the last bin),
the nearest concepts by decoder cosine, and the strongest bridge partners of each concept
(largest positive B[i, :] as the image side, B[:, i] as the text side; i itself excluded).

Without a text side (n_text = 0) or an image side, the cross-modal numbers (modality score,
classifier accuracy, bridges) are NaN / empty and `missing` says why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from vlmsae import metrics
from vlmsae.codes import encode_codes
from vlmsae.explore_layout import unit_rows

# Words too common in captions to name a concept.
STOP_WORDS = frozenset(
    "a an the of in on at to and or with without is are was were be been it its this that these those there here "
    "some one two three image picture photo photograph shows showing shown showing has have having near next by "
    "for from into onto over under as".split()
)
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # letters and digits only: a label can never hold markup


@dataclass
class CSRCodes:
    """The arrays of an (n, c) CSR code matrix, on CPU, as numpy."""

    crow: np.ndarray
    col: np.ndarray
    val: np.ndarray
    shape: tuple[int, int]

    @classmethod
    def from_torch(cls, z: torch.Tensor) -> "CSRCodes":
        return cls(z.crow_indices().numpy(), z.col_indices().numpy(), z.values().float().numpy(), tuple(z.shape))

    @property
    def row(self) -> np.ndarray:
        return np.repeat(np.arange(self.shape[0]), np.diff(self.crow))

    def to_torch(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(torch.from_numpy(self.crow), torch.from_numpy(self.col),
                                       torch.from_numpy(self.val), self.shape)

    def take_rows(self, rows: np.ndarray) -> "CSRCodes":
        """Rows `rows` (any order, repeats allowed) as a new CSR matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.crow[rows], np.diff(self.crow)[rows]
        crow = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # position of each output value within its row, added to that row's start in the input
        within = np.arange(crow[-1]) - np.repeat(crow[:-1], lengths)
        source = np.repeat(starts, lengths) + within
        return CSRCodes(crow, self.col[source], self.val[source], (len(rows), self.shape[1]))


@dataclass
class ConceptStats:
    """Everything the explorer embeds, one entry per concept unless said otherwise."""

    energy: np.ndarray                 # (c,)
    modality_score: np.ndarray         # (c,), NaN where undefined
    classifier_accuracy: np.ndarray    # (c,), NaN where undefined
    frequency: np.ndarray              # (c,) share of all rows where the concept fires
    fires: np.ndarray                  # (c, 2) rows where it fires: images, texts
    top_images: np.ndarray             # (c, n_top) image rows, -1 padded
    top_image_values: np.ndarray       # (c, n_top)
    top_texts: np.ndarray              # (c, n_top) text rows, -1 padded
    top_text_values: np.ndarray        # (c, n_top)
    hist_max: np.ndarray               # (c,) largest activation (upper edge of the last bin)
    hist_image: np.ndarray             # (c, n_bins) counts
    hist_text: np.ndarray              # (c, n_bins) counts
    neighbors: np.ndarray              # (c, n_neighbors) concept ids, nearest first
    neighbor_cosines: np.ndarray       # (c, n_neighbors)
    bridges: list                      # top bridge pairs (image concept, text concept, B) largest first
    bridge_partners_as_image: list     # per concept: [(text concept j, B[i, j]), ...]
    bridge_partners_as_text: list      # per concept: [(image concept j, B[j, i]), ...]
    labels: list                       # per concept: short label (most frequent caption words)
    words: list                        # per concept: the words behind the label, for search
    image_captions: list = field(default_factory=list)  # per image row: its text rows (from pairs)
    n_image: int = 0
    n_text: int = 0
    classifier_sample: tuple = (0, 0)  # rows per modality the classifier accuracy used
    missing: dict = field(default_factory=dict)

    @property
    def dead(self) -> np.ndarray:
        return self.fires.sum(axis=1) == 0


# ------------------------------------------------------------------------------ vectorised helpers
def top_rows_per_concept(codes: CSRCodes, n_top: int) -> tuple[np.ndarray, np.ndarray]:
    """(c, n_top) rows with the largest positive codes of each concept, largest first (ties: lower
    row first), -1 / 0.0 where a concept fires on fewer rows."""
    c = codes.shape[1]
    rows, cols, vals = codes.row, codes.col, codes.val
    keep = vals > 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((rows, -vals, cols))  # by concept, then value descending, then row
    rows, cols, vals = rows[order], cols[order], vals[order]
    group_start = np.searchsorted(cols, np.arange(c))
    rank = np.arange(len(cols)) - group_start[cols]
    chosen = rank < n_top
    top, top_values = np.full((c, n_top), -1, np.int64), np.zeros((c, n_top), np.float32)
    top[cols[chosen], rank[chosen]] = rows[chosen]
    top_values[cols[chosen], rank[chosen]] = vals[chosen]
    return top, top_values


def firing_counts(codes: CSRCodes) -> np.ndarray:
    """(c,) number of rows with a positive code for each concept."""
    return np.bincount(codes.col[codes.val > 0], minlength=codes.shape[1])


def activation_histograms(codes: CSRCodes, upper: np.ndarray, n_bins: int) -> np.ndarray:
    """(c, n_bins) counts of each concept's positive codes in bins of width upper_i / n_bins."""
    c = codes.shape[1]
    keep = codes.val > 0
    cols, vals = codes.col[keep], codes.val[keep].astype(np.float64)
    scale = np.divide(n_bins, upper, out=np.zeros(c), where=upper > 0)
    bins = np.minimum((vals * scale[cols]).astype(np.int64), n_bins - 1)
    return np.bincount(cols * n_bins + bins, minlength=c * n_bins).reshape(c, n_bins)


def max_per_concept(codes: CSRCodes) -> np.ndarray:
    out = np.zeros(codes.shape[1], np.float64)
    np.maximum.at(out, codes.col, codes.val.astype(np.float64))
    return out


def nearest_concepts(dictionary, n_neighbors: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(c, m) nearest other concepts by cosine of decoder rows, nearest first, and the cosines."""
    D = torch.from_numpy(unit_rows(dictionary))
    c = D.shape[0]
    m = min(n_neighbors, c - 1)
    ids, cosines = np.zeros((c, m), np.int64), np.zeros((c, m), np.float32)
    if m <= 0:
        return ids, cosines
    for start in range(0, c, block):
        sims = D[start : start + block] @ D.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -torch.inf  # a concept is not its own neighbour
        values, index = sims.topk(m, dim=1)
        ids[start : start + block], cosines[start : start + block] = index.numpy(), values.numpy()
    return ids, cosines


def strongest_partners(B: np.ndarray, n: int, axis: int, block: int = 1024) -> list[list[tuple[int, float]]]:
    """Per concept i, the n largest positive entries of B[i, :] (axis=1) or B[:, i] (axis=0), j != i.

    Read `block` concepts at a time (torch.topk: several times faster than numpy's argpartition on
    rows of 8192), so at most a (block, c) copy of B is held besides B."""
    c = B.shape[0]
    m = min(n, c - 1)
    if m <= 0:
        return [[] for _ in range(c)]
    full = torch.from_numpy(np.asarray(B, dtype=np.float64))
    out = []
    for start in range(0, c, block):
        scores = (full[start : start + block] if axis == 1 else full[:, start : start + block].T).clone()
        rows = torch.arange(scores.shape[0])
        scores[rows, rows + start] = -torch.inf  # a concept does not bridge to itself
        values, index = scores.topk(m, dim=1)  # sorted, largest first
        out.extend([(int(j), float(v)) for j, v in zip(jr, vr) if v > 0] for jr, vr in zip(index.tolist(), values.tolist()))
    return out


def caption_words(captions) -> Counter:
    counts: Counter = Counter()
    for caption in captions:
        counts.update(w for w in WORD.findall(str(caption).lower()) if w not in STOP_WORDS)
    return counts


def concept_labels(stats: ConceptStats, captions: list[str], image_captions: list[list[int]],
                   n_words: int = 3, n_search_words: int = 8) -> tuple[list[str], list[list[str]]]:
    """Short label per concept: the most frequent caption words among its top text activations,
    or, for an image-leaning concept (modality score >= 0.5, or no texts fire it), among the
    captions of its top images. Returns (labels, words for search)."""
    labels, words = [], []
    for i in range(len(stats.energy)):
        texts = [captions[r] for r in stats.top_texts[i] if r >= 0]
        score = stats.modality_score[i]
        if not texts or (np.isfinite(score) and score >= 0.5):
            image_texts = [captions[t] for r in stats.top_images[i] if r >= 0 for t in image_captions[r]]
            texts = image_texts or texts
        counts = caption_words(texts)
        ranked = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        labels.append(" ".join(ranked[:n_words]))
        words.append(ranked[:n_search_words])
    return labels, words


# ------------------------------------------------------------------------------ the whole set
def _classifier_rows(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))


def concept_stats(embeddings, sae, *, n_top: int = 8, n_bins: int = 20, n_neighbors: int = 8,
                  n_bridges: int = 500, n_partners: int = 5, classifier_rows: int = 10_000, batch_size: int = 8192,
                  device="cpu", seed: int = 0, progress: bool = False) -> ConceptStats:
    """The explorer's per-concept numbers for `sae` on an `EmbeddingSet` (see the module doc)."""
    if embeddings.dim != sae.d:
        raise ValueError(f"the embeddings have {embeddings.dim} dimensions but the SAE expects d={sae.d}: "
                         "use the SAE trained on this model's embeddings")
    n_image, n_text, c = embeddings.n_image, embeddings.n_text, sae.c
    if n_image + n_text == 0:
        raise ValueError("the embedding set is empty: extract some data first")
    z_img = CSRCodes.from_torch(encode_codes(sae, embeddings.image, batch_size=batch_size, device=device, progress=progress))
    z_txt = CSRCodes.from_torch(encode_codes(sae, embeddings.text, batch_size=batch_size, device=device, progress=progress))
    D = sae.dictionary.detach().float().cpu()
    missing = {}

    sides = [z.to_torch() for z in (z_img, z_txt) if z.shape[0] > 0]
    energy = metrics.energy(iter(sides))
    nan = np.full(c, np.nan)
    modality, accuracy, B, sample = nan, nan.copy(), None, (0, 0)
    if n_image and n_text:
        modality = metrics.modality_score(z_img.to_torch(), z_txt.to_torch())
        rng = np.random.default_rng(seed)
        img_rows, txt_rows = _classifier_rows(n_image, classifier_rows, rng), _classifier_rows(n_text, classifier_rows, rng)
        sample = (len(img_rows), len(txt_rows))
        accuracy = metrics.modality_classifier_accuracy(np.asarray(embeddings.image[img_rows]),
                                                         np.asarray(embeddings.text[txt_rows]), D)
        pairs = np.asarray(embeddings.pairs)
        if len(pairs):
            B = metrics.bridge_matrix(z_img.take_rows(pairs[:, 0]).to_torch(), z_txt.take_rows(pairs[:, 1]).to_torch(), D)
        else:
            missing["bridges"] = "no matched image-caption pairs in this set"
    else:
        side = "text" if not n_text else "image"
        missing["modality"] = f"no {side} embeddings in this set: modality score, classifier accuracy and bridges need both"
        missing["bridges"] = missing["modality"]
    if B is not None:
        bridges = metrics.top_bridges(B, n_bridges)
        as_image, as_text = strongest_partners(B, n_partners, axis=1), strongest_partners(B, n_partners, axis=0)
    else:
        bridges, as_image, as_text = [], [[] for _ in range(c)], [[] for _ in range(c)]

    fires = np.stack([firing_counts(z_img), firing_counts(z_txt)], axis=1)
    top_images, top_image_values = top_rows_per_concept(z_img, n_top)
    top_texts, top_text_values = top_rows_per_concept(z_txt, n_top)
    upper = np.maximum(max_per_concept(z_img), max_per_concept(z_txt))
    neighbors, neighbor_cosines = nearest_concepts(D, n_neighbors)
    stats = ConceptStats(
        energy=np.asarray(energy, np.float64), modality_score=np.asarray(modality, np.float64),
        classifier_accuracy=np.asarray(accuracy, np.float64), frequency=fires.sum(axis=1) / (n_image + n_text),
        fires=fires, top_images=top_images, top_image_values=top_image_values, top_texts=top_texts,
        top_text_values=top_text_values, hist_max=upper, hist_image=activation_histograms(z_img, upper, n_bins),
        hist_text=activation_histograms(z_txt, upper, n_bins), neighbors=neighbors, neighbor_cosines=neighbor_cosines,
        bridges=bridges, bridge_partners_as_image=as_image, bridge_partners_as_text=as_text, labels=[], words=[],
        n_image=n_image, n_text=n_text, classifier_sample=sample, missing=missing,
    )
    captions = embeddings.captions if n_text else []
    image_captions: list[list[int]] = [[] for _ in range(n_image)]
    for image_row, text_row in np.asarray(embeddings.pairs):
        image_captions[int(image_row)].append(int(text_row))
    stats.image_captions = image_captions
    stats.labels, stats.words = concept_labels(stats, captions, image_captions)
    return stats
