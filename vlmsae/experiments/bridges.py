"""Figure 2: the bridge matrix, its strongest pairs, who they fire on, and the shuffled control.

    B = E_pairs[z_img^T z_txt] ⊙ (D D^T)           (`vlmsae.metrics.bridge_matrix`)

over matched image-caption pairs: B[i, j] is large when image-side concept i and text-side
concept j fire together on the same pair *and* point the same way.

Control: shuffle which caption goes with which image. Co-activation of a true bridge falls from
p (they fire together) to about p_i p_j (chance), so the bridge mass collapses; what remains
is the chance co-firing of frequent concepts. We report

    mass(B)          = sum of the n largest off-diagonal entries of B
    shuffled ratio   = mean over shuffles of mass(B_shuffled) / mass(B)
    same-pair ratio  = sum over the n real top pairs of B_shuffled[i, j] / sum of B[i, j]

A ratio well below 1 says the bridges come from the pairing, not from frequency alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import torch

from .. import metrics


# ----------------------------------------------------------------------------- sparse helpers
def to_scipy(codes) -> scipy.sparse.csr_matrix:
    """Codes (torch sparse CSR/COO, dense torch tensor or numpy array) as a scipy CSR matrix."""
    if isinstance(codes, scipy.sparse.spmatrix):
        return codes.tocsr()
    if isinstance(codes, torch.Tensor):
        if codes.layout == torch.sparse_coo:
            codes = codes.coalesce().to_sparse_csr()
        if codes.layout == torch.sparse_csr:
            return scipy.sparse.csr_matrix(
                (codes.values().detach().cpu().double().numpy(), codes.col_indices().cpu().numpy(),
                 codes.crow_indices().cpu().numpy()), shape=tuple(codes.shape))
        codes = codes.detach().cpu().double().numpy()
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D (rows, concepts), got shape {codes.shape}")
    return scipy.sparse.csr_matrix(codes)


def to_torch_csr(matrix: scipy.sparse.spmatrix) -> torch.Tensor:
    matrix = matrix.tocsr()
    return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                   torch.from_numpy(matrix.indices.astype(np.int64)),
                                   torch.from_numpy(matrix.data.astype(np.float32)), matrix.shape,
                                   check_invariants=False)


def permute_rows(codes, permutation) -> torch.Tensor:
    """Rows of `codes` reordered: result[r] = codes[permutation[r]] (torch sparse CSR)."""
    permutation = np.asarray(permutation)
    matrix = to_scipy(codes)
    if sorted(permutation.tolist()) != list(range(matrix.shape[0])):
        raise ValueError(f"permutation must reorder all {matrix.shape[0]} rows exactly once")
    return to_torch_csr(matrix[permutation])


def top_rows(codes, concept: int, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The n rows where `concept` fires most strongly: (row indices, code values), largest first.

    Rows where it does not fire are never returned (fewer than n if it fires on fewer rows).
    """
    column = to_scipy(codes).getcol(int(concept)).tocoo()
    order = np.argsort(-column.data, kind="stable")[:n]
    return column.row[order].astype(np.int64), column.data[order]


# ----------------------------------------------------------------------------- the analysis
@dataclass
class BridgeResult:
    """B (c, c); top: [(image concept, text concept, score)], largest first; masses as above."""

    B: np.ndarray
    top: list
    mass: float
    shuffled_masses: list
    same_pair_shuffled: list = field(default_factory=list)

    @property
    def shuffled_ratio(self) -> float:
        return float(np.mean(self.shuffled_masses) / self.mass)

    @property
    def same_pair_ratio(self) -> float:
        return float(np.mean(self.same_pair_shuffled) / sum(score for _, _, score in self.top))


def _without(B: np.ndarray, exclude) -> np.ndarray:
    """B with the rows and columns of the `exclude` concepts set to -inf (never a top bridge)."""
    exclude = list(exclude)
    if not exclude:
        return B
    B = np.array(B, dtype=np.float64)
    B[exclude, :] = -np.inf
    B[:, exclude] = -np.inf
    return B


def bridge_mass(B, n: int, exclude=()) -> float:
    """Sum of the n largest off-diagonal entries of the bridge matrix B (outside the `exclude` concepts)."""
    return float(sum(score for _, _, score in metrics.top_bridges(_without(B, exclude), n)))


def bridge_analysis(paired_image_codes, text_codes, dictionary, *, n_top: int = 20, shuffles: int = 3,
                    seed: int = 0, exclude=()) -> BridgeResult:
    """The bridge matrix of matched pairs, its top `n_top` bridges and the shuffled-pairing control.

    paired_image_codes (n, c): row r is the image of caption r; text_codes (n, c); dictionary (c, d).
    Each of `shuffles` controls permutes the caption rows with a generator seeded by seed + s.
    exclude: concepts that may not be an end of a top bridge (e.g. the modality-gap concept, which
    fires on nearly every row of one modality whatever the pairing); B itself keeps them.
    """
    if n_top < 1 or shuffles < 1:
        raise ValueError(f"n_top and shuffles must be at least 1, got n_top={n_top}, shuffles={shuffles}")
    D = dictionary.detach().cpu() if isinstance(dictionary, torch.Tensor) else dictionary
    B = metrics.bridge_matrix(paired_image_codes, text_codes, D)
    top = metrics.top_bridges(_without(B, exclude), n_top)
    mass = float(sum(score for _, _, score in top))
    if mass <= 0:
        raise ValueError("the bridge matrix has no positive off-diagonal entry: no bridges to compare with a shuffle")
    n = to_scipy(text_codes).shape[0]
    shuffled, same_pair = [], []
    for s in range(shuffles):
        permutation = np.random.default_rng(seed + s).permutation(n)
        B_shuffled = metrics.bridge_matrix(paired_image_codes, permute_rows(text_codes, permutation), D)
        shuffled.append(bridge_mass(B_shuffled, n_top, exclude))
        same_pair.append(float(sum(B_shuffled[i, j] for i, j, _ in top)))
    return BridgeResult(B=B, top=top, mass=mass, shuffled_masses=shuffled, same_pair_shuffled=same_pair)


# ----------------------------------------------------------------------------- examples of each end
def first_caption_rows(pairs, n_image: int) -> np.ndarray:
    """(n_image,) the text row of the first caption of each image (-1 for an image without one)."""
    pairs = np.asarray(pairs)
    first = np.full(n_image, -1, dtype=np.int64)
    # reversed so the earliest caption of each image is written last
    first[pairs[::-1, 0]] = pairs[::-1, 1]
    return first


def concept_examples(image_codes, text_codes, captions, pairs, concepts_image, concepts_text, n: int = 3) -> dict:
    """Top-activating examples of each end of the bridges.

    Image concepts: their n strongest images, as image rows and those images' first captions.
    Text concepts: their n strongest captions. Returns {"image": {i: {"rows", "values", "captions"}},
    "text": {j: {...}}}.
    """
    image_codes, text_codes = to_scipy(image_codes), to_scipy(text_codes)
    first = first_caption_rows(pairs, image_codes.shape[0])
    out = {"image": {}, "text": {}}
    for i in dict.fromkeys(int(i) for i in concepts_image):
        rows, values = top_rows(image_codes, i, n)
        out["image"][i] = {"rows": rows.tolist(), "values": values.tolist(),
                           "captions": [captions[first[r]] if first[r] >= 0 else "" for r in rows]}
    for j in dict.fromkeys(int(j) for j in concepts_text):
        rows, values = top_rows(text_codes, j, n)
        out["text"][j] = {"rows": rows.tolist(), "values": values.tolist(), "captions": [captions[r] for r in rows]}
    return out


def shapes_thumbnails(emb, image_rows) -> np.ndarray | None:
    """uint8 (m, 32, 32, 3) images of the given image rows when `emb` embeds the shapes world,
    else None (other sources have images of many sizes; the explorer shows those). The source is
    re-opened and checked against the embeddings by the explorer's `source_images`."""
    from ..explore_images import ImagesUnavailable, source_images

    config = emb.data if isinstance(emb.data, dict) else {}
    if config.get("source") != "shapes":
        return None
    try:
        get = source_images(emb)
        return np.stack([np.asarray(get(int(row))) for row in image_rows])
    except ImagesUnavailable:
        return None


# ----------------------------------------------------------------------------- figures
def bridge_graph_figure(top, examples: dict | None = None, *, title: str = "Top bridges"):
    """Bipartite plotly graph: image concepts left, text concepts right, one edge per bridge,
    edge width proportional to its score; hovering a node shows its top examples' captions."""
    import plotly.graph_objects as go

    from ..plots import COLORS

    if not top:
        raise ValueError("no bridges to draw: top is empty")
    left = list(dict.fromkeys(i for i, _, _ in top))
    right = list(dict.fromkeys(j for _, j, _ in top))
    y_left = {i: 1 - r / max(len(left) - 1, 1) for r, i in enumerate(left)}
    y_right = {j: 1 - r / max(len(right) - 1, 1) for r, j in enumerate(right)}
    largest = max(score for _, _, score in top)
    fig = go.Figure()
    for i, j, score in top:
        fig.add_trace(go.Scatter(x=[0, 1], y=[y_left[i], y_right[j]], mode="lines", hoverinfo="text",
                                 text=f"image {i} - text {j}: B = {score:.3g}", showlegend=False,
                                 line=dict(width=1 + 9 * score / largest, color="rgba(90, 90, 90, 0.55)")))

    def hover(side: str, concept: int) -> str:
        lines = (examples or {}).get(side, {}).get(concept, {}).get("captions", [])
        return f"{side} concept {concept}<br>" + "<br>".join(lines)

    for side, order, ys, x, colour in (("image", left, y_left, 0, COLORS["image"]), ("text", right, y_right, 1, COLORS["text"])):
        fig.add_trace(go.Scatter(
            x=[x] * len(order), y=[ys[c] for c in order], mode="markers+text", name=f"{side} concepts",
            text=[str(c) for c in order], textposition="middle left" if x == 0 else "middle right",
            hovertext=[hover(side, c) for c in order], hoverinfo="text", marker=dict(size=14, color=colour)))
    fig.update_layout(title=title, xaxis=dict(visible=False, range=[-0.4, 1.4]), yaxis=dict(visible=False),
                      height=max(400, 28 * max(len(left), len(right))))
    return fig


def bridge_heatmap_figure(B, concepts, *, title: str = "Bridge matrix"):
    """Heatmap of B restricted to `concepts` (rows: image side, columns: text side)."""
    import plotly.graph_objects as go

    concepts = [int(c) for c in concepts]
    sub = np.asarray(B)[np.ix_(concepts, concepts)]
    labels = [str(c) for c in concepts]
    fig = go.Figure(go.Heatmap(z=sub, x=labels, y=labels, colorscale="Viridis", colorbar=dict(title="B")))
    fig.update_layout(title=title, xaxis=dict(title="text concept j", type="category"),
                      yaxis=dict(title="image concept i", type="category", autorange="reversed"))
    return fig


def bridge_table(result: BridgeResult, dictionary, modality_score, examples: dict | None = None) -> list[dict]:
    """One row per top bridge: both concepts, B, the cosine of their directions, the co-activation
    E[z_img,i z_txt,j] (= B / cosine), both ends' modality scores and their first example caption."""
    D = np.asarray(dictionary.detach().cpu() if isinstance(dictionary, torch.Tensor) else dictionary, dtype=np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True).clip(1e-12)
    rows = []
    for i, j, score in result.top:
        cosine = float(D[i] @ D[j])
        row = {"image concept": i, "text concept": j, "bridge B": score, "cosine": cosine,
               "co-activation": score / cosine if cosine else float("nan"),
               "score of i": float(modality_score[i]), "score of j": float(modality_score[j])}
        if examples is not None:
            row["image i: caption of its top image"] = (examples["image"].get(i, {}).get("captions") or [""])[0]
            row["text j: its top caption"] = (examples["text"].get(j, {}).get("captions") or [""])[0]
        rows.append(row)
    return rows


def thumbnails_figure(thumbnails: dict, *, title: str = "Top images of the image concepts (one row per concept)"):
    """A grid of small images: one row per concept ({concept: uint8 (m, h, w, 3)})."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not thumbnails:
        raise ValueError("no thumbnails to draw")
    concepts = list(thumbnails)
    cols = max(len(images) for images in thumbnails.values())
    fig = make_subplots(rows=len(concepts), cols=cols, horizontal_spacing=0.01, vertical_spacing=0.02,
                        row_titles=[str(c) for c in concepts])
    for r, concept in enumerate(concepts, start=1):
        for col, image in enumerate(thumbnails[concept], start=1):
            fig.add_trace(go.Image(z=image), row=r, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=110 * len(concepts) + 60, width=110 * cols + 200)
    return fig


def claims(result: BridgeResult, table: list[dict]) -> dict:
    """Claim values: top bridge, mass, shuffled ratios, how many top bridges join unimodal ends."""
    unimodal_pairs = sum(1 for row in table if row["score of i"] >= 0.9 and row["score of j"] <= 0.1)
    return {
        "top_bridge": [result.top[0][0], result.top[0][1]],
        "top_bridge_score": result.top[0][2],
        "bridge_mass_top_n": result.mass,
        "n_top": len(result.top),
        "shuffled_mass_ratio": result.shuffled_ratio,
        "same_pairs_shuffled_ratio": result.same_pair_ratio,
        "top_bridges_image_only_to_text_only": unimodal_pairs,
    }
