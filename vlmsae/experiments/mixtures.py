"""Figure 4: SAEs retrained on several image:text mixtures, their concept maps and shared core.

Each mixture SAE is `pipeline.train(emb, "batchtopk", c, k, seed, steps, ratio=r, n_train=n)`
with the same number of training rows n for every ratio (n = min(#images, #texts), which every
ratio from 1:9 to 9:1 can draw), so only the image:text balance changes. Its concepts are then
measured on the whole embedding set (all images and all captions), so energies and modality
scores are comparable across mixtures:

    Energy_i        = E_r[z_ri] over all image and text rows
    ModalityScore_i = E_img[z_i] / (E_img[z_i] + E_txt[z_i])

Shared core. For two mixtures a, b, the top-n energetic concepts of each are Hungarian-matched by
cosine (`metrics.match_concepts`); `shared_counts[a, b]` is the number of matched pairs with
cosine >= `threshold`, and `stability_top[a, b]` the mean matched cosine (`metrics.stability(top=n)`).
`core` counts the top-n concepts of the reference mixture that find such a partner in the top-n of
every other mixture.

Concept maps: one layout of all mixtures' decoder rows together (`vlmsae.explore_layout.concept_layout`:
UMAP with the cosine metric, cached on disk; "pca" for quick runs), so that a concept found by two
mixtures lands at the same place in both panels.
"""

from __future__ import annotations

import numpy as np

from .. import cache, metrics, pipeline
from .stability import concept_statistics, embedding_key, mean_off_diagonal, stability_matrix

RATIOS = ("1:9", "1:3", "1:1", "3:1", "9:1")


def mixture_concepts(emb, ratio, *, c: int, k: int, steps: int, seed: int = 0, n_train: int | None = None,
                     device: str = "cpu") -> dict[str, np.ndarray]:
    """`concept_statistics` (on the whole set) of the SAE trained on an image:text `ratio` mixture, cached."""
    n_train = min(emb.n_image, emb.n_text) if n_train is None else int(n_train)
    parts = {**embedding_key(emb), "ratio": str(ratio), "c": c, "k": k, "seed": seed, "steps": steps,
             "n_train": n_train}

    def compute():
        sae = pipeline.train(emb, "batchtopk", c=c, k=k, seed=seed, steps=steps, ratio=ratio, n_train=n_train,
                             device=device)
        return concept_statistics(sae, emb.image, emb.text, device=device)

    return cache.get_or_compute("mixture-concepts", parts, compute, kind="arrays")


def shared_top_concepts(dictionaries, energies, top: int, *, threshold: float = 0.9, reference: int | None = None) -> dict:
    """How many of the top-n energetic concepts the dictionaries share (see the module doc).

    Returns shared_counts (m, m) ints (diagonal = top), stability_top (m, m), stability_all
    (m, m), core (int) and core_concepts (indices into the reference dictionary),
    reference defaulting to the middle dictionary.
    """
    m = len(dictionaries)
    if m < 2 or len(energies) != m:
        raise ValueError(f"need at least 2 dictionaries with one energy vector each, got {m} and {len(energies)}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a cosine in (0, 1], got {threshold}")
    reference = m // 2 if reference is None else int(reference)
    tops = [np.argsort(-np.asarray(e, dtype=np.float64), kind="stable")[:top] for e in energies]
    top_rows = [np.asarray(D)[t] for D, t in zip(dictionaries, tops)]
    counts = np.diag(np.full(m, len(tops[0]))).astype(np.int64)
    for a in range(m):
        for b in range(a + 1, m):
            _, _, cosines = metrics.match_concepts(top_rows[a], top_rows[b])
            counts[a, b] = counts[b, a] = int((cosines >= threshold).sum())
    # core: reference concepts whose Hungarian partner in every other top list is close enough
    partnered = np.ones(len(tops[reference]), dtype=bool)
    for b in range(m):
        if b != reference:
            rows, _, cosines = metrics.match_concepts(top_rows[reference], top_rows[b])
            good = np.zeros_like(partnered)
            good[rows[cosines >= threshold]] = True
            partnered &= good
    return {
        "shared_counts": counts,
        "stability_top": stability_matrix(dictionaries, energies, top=top),
        "stability_all": stability_matrix(dictionaries),
        "core": int(partnered.sum()),
        "core_concepts": tops[reference][partnered],
        "reference": reference,
    }


def mixture_analysis(emb, *, ratios=RATIOS, c: int, k: int, steps: int, seed: int = 0, top: int | None = None,
                     threshold: float = 0.9, device: str = "cpu") -> dict:
    """Concepts of every mixture SAE and what they share. top defaults to c // 8 (the paper's 512 of 4096).

    Mixture m trains from seed `seed + m`: with one shared seed every SAE would start from the same
    random dictionary, and the rarely trained concepts, which barely move from it, would look stable
    across mixtures for that reason alone.
    """
    top = max(1, c // 8) if top is None else int(top)
    concepts = [mixture_concepts(emb, r, c=c, k=k, steps=steps, seed=seed + m, device=device) for m, r in enumerate(ratios)]
    shared = shared_top_concepts([cs["dictionary"] for cs in concepts], [cs["energy"] for cs in concepts], top,
                                 threshold=threshold)
    return {"ratios": [str(r) for r in ratios], "concepts": concepts, "top": top, "threshold": threshold, **shared}


def joint_layout(dictionaries, method: str = "umap", *, seed: int = 0) -> list[np.ndarray]:
    """One 2-D layout of all dictionaries' rows together, split back per dictionary."""
    from ..explore_layout import concept_layout

    stacked = np.concatenate([np.asarray(D, dtype=np.float32) for D in dictionaries])
    xy = concept_layout(stacked, method=method, seed=seed)
    bounds = np.cumsum([0, *(len(D) for D in dictionaries)])
    return [xy[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


def claims(result: dict) -> dict:
    """Claim values: mean pairwise shared top-n count and stabilities across mixtures, the core size."""
    counts = np.asarray(result["shared_counts"], dtype=np.float64)
    m = counts.shape[0]
    energy_in_modal = []
    for cs in result["concepts"]:
        score, energy = np.nan_to_num(cs["modality_score"], nan=0.5), cs["energy"]
        energy_in_modal.append(float(energy[(score < 0.1) | (score > 0.9)].sum() / energy.sum()))
    return {
        "top_n": result["top"],
        "shared_top_mean": float((counts.sum() - np.trace(counts)) / (m * (m - 1))),
        "shared_top_fraction": float((counts.sum() - np.trace(counts)) / (m * (m - 1)) / result["top"]),
        "core_all_mixtures": result["core"],
        "stability_top_mean": mean_off_diagonal(result["stability_top"]),
        "stability_all_mean": mean_off_diagonal(result["stability_all"]),
        "unimodal_energy_share_by_ratio": dict(zip(result["ratios"], energy_in_modal)),
    }


# ----------------------------------------------------------------------------- figure
def mixture_map_figure(result: dict, layouts: list[np.ndarray], *, colorscale=None, title: str = "Concepts per mixture"):
    """Two rows of panels, one column per mixture: equal point sizes (top), sizes by energy (bottom);
    colour = modality score (0 text-only .. 1 image-only)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ratios = result["ratios"]
    from ..plots import MODALITY_SCALE

    colorscale = colorscale or MODALITY_SCALE
    fig = make_subplots(rows=2, cols=len(ratios), subplot_titles=[f"image:text {r}" for r in ratios] + [""] * len(ratios),
                        horizontal_spacing=0.02, vertical_spacing=0.06)
    largest = max(float(np.max(cs["energy"])) for cs in result["concepts"])
    for col, (ratio, cs, xy) in enumerate(zip(ratios, result["concepts"], layouts), start=1):
        score = np.nan_to_num(cs["modality_score"], nan=0.5)
        energy = np.asarray(cs["energy"], dtype=np.float64)
        hover = [f"concept {i}<br>modality score {s:.2f}<br>energy {e:.3g}" for i, (s, e) in enumerate(zip(score, energy))]
        for row, size in ((1, np.full(len(score), 5.0)), (2, 2 + 28 * np.sqrt(energy / largest))):
            fig.add_trace(go.Scatter(
                x=xy[:, 0], y=xy[:, 1], mode="markers", hovertext=hover, hoverinfo="text", showlegend=False,
                marker=dict(size=size, color=score, cmin=0, cmax=1, colorscale=colorscale, opacity=0.8,
                            line=dict(width=0), showscale=(row == 1 and col == len(ratios)),
                            colorbar=dict(title="modality<br>score", len=0.5, y=0.78))), row=row, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=560, width=max(900, 230 * len(ratios)))
    return fig
