"""Figure 3: energy concentration and seed stability of the shared BatchTopK SAEs.

The seed SAEs `pipeline.train(emb, "batchtopk", c=c, k=k, seed=s, steps=steps)`, s = 0..seeds-1,
are the ones every figure notebook uses; `seed_concepts` caches what the figures need of each
(dictionary, per-modality energies, modality scores), so figures 5 and 6 read them too.

    Energy_i        = E_r[z_ri] over all image and text rows (= (n_img E_img + n_txt E_txt) / n)
    energy share    = cumulative share of the m most energetic concepts (`metrics.energy_share`)
    Stability(D,D') = mean cosine of Hungarian-matched rows (`metrics.stability`), over all
                      concepts or over each run's own top-n energetic concepts

The modality-gap concept. The embedded default's SAE spends one concept on the modality offset:
its direction is close to the modality direction  g = mean(image rows) - mean(text rows)  and it
holds several times the energy of the next concept, because it fires (with a large code) on every
row of one modality. `gap_concept` finds it as the concept of largest |cos(D_i, g)|;
`energy_stability(..., drop_gap=True)` repeats the statistics without it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import cache, metrics, pipeline
from ..codes import encode_codes


# ----------------------------------------------------------------------------- identities
def embedding_key(emb) -> dict:
    """Cache-key parts naming an embedding set: its folder name and checksum (an `EmbeddingSet`),
    else a sha256 of its image and text rows (any object with `.image` and `.text` arrays)."""
    manifest = getattr(emb, "manifest", None)
    if manifest is not None and "checksums" in manifest:
        return {"embeddings": emb.path.name, "checksum": manifest["checksums"]["embeddings.npy"]}
    digest = hashlib.sha256()
    for rows in (emb.image, emb.text):
        digest.update(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
    return {"embeddings": "arrays", "checksum": digest.hexdigest()}


def modality_direction(emb) -> np.ndarray:
    """g = mean of the image rows - mean of the text rows, shape (d,), float64 (the modality gap)."""
    image = np.asarray(emb.image, dtype=np.float64)
    text = np.asarray(emb.text, dtype=np.float64)
    if len(image) == 0 or len(text) == 0:
        raise ValueError(f"need rows of both modalities, got {len(image)} images and {len(text)} texts")
    return image.mean(axis=0) - text.mean(axis=0)


# ----------------------------------------------------------------------------- per-seed concepts
def concept_statistics(sae, image_rows, text_rows, *, device: str = "cpu") -> dict[str, np.ndarray]:
    """What the figures need of one SAE: dictionary (c, d), energy_image / energy_text (c,)
    (per-modality mean codes), energy (c,) over all rows, modality_score (c,)."""
    image_codes = encode_codes(sae, image_rows, device=device)
    text_codes = encode_codes(sae, text_rows, device=device)
    energy_image, energy_text = metrics.energy(image_codes), metrics.energy(text_codes)
    n_image, n_text = len(image_rows), len(text_rows)
    return {
        "dictionary": sae.dictionary.detach().cpu().numpy().astype(np.float32),
        "energy_image": energy_image,
        "energy_text": energy_text,
        "energy": (n_image * energy_image + n_text * energy_text) / (n_image + n_text),
        "modality_score": metrics.modality_score(image_codes, text_codes),
    }


def seed_concepts(emb, *, c: int, k: int, seed: int, steps: int, device: str = "cpu") -> dict[str, np.ndarray]:
    """`concept_statistics` of the shared seed SAE `pipeline.train(emb, "batchtopk", c, k, seed, steps)`, cached."""
    parts = {**embedding_key(emb), "c": c, "k": k, "seed": seed, "steps": steps}

    def compute():
        sae = pipeline.train(emb, "batchtopk", c=c, k=k, seed=seed, steps=steps, device=device)
        return concept_statistics(sae, emb.image, emb.text, device=device)

    return cache.get_or_compute("seed-concepts", parts, compute, kind="arrays")


def all_seed_concepts(emb, *, c: int, k: int, seeds: int, steps: int, device: str = "cpu") -> list[dict]:
    """`seed_concepts` for seeds 0..seeds-1 (trains the SAEs that are not cached yet)."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    return [seed_concepts(emb, c=c, k=k, seed=s, steps=steps, device=device)
            for s in tqdm(range(seeds), desc="seed SAEs", leave=False)]


# ----------------------------------------------------------------------------- the gap concept
def gap_concept(dictionary, energy, direction) -> dict:
    """The concept most aligned with the modality direction g, and how dominant it is.

    index = argmax_i |cos(D_i, g)|; cosine = cos(D_i, g) (signed); energy_rank (0 = most
    energetic); energy_ratio = its energy / the largest energy among the other concepts.
    """
    D = np.asarray(dictionary, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    g = np.asarray(direction, dtype=np.float64)
    if D.ndim != 2 or g.shape != (D.shape[1],) or energy.shape != (D.shape[0],):
        raise ValueError(f"need dictionary (c, d), energy (c,) and direction (d,), got {D.shape}, {energy.shape}, {g.shape}")
    if np.linalg.norm(g) == 0:
        raise ValueError("the modality direction is zero: images and texts have the same mean")
    cosines = D @ g / (np.linalg.norm(D, axis=1).clip(1e-12) * np.linalg.norm(g))
    index = int(np.argmax(np.abs(cosines)))
    others = np.delete(energy, index)
    return {
        "index": index,
        "cosine": float(cosines[index]),
        "energy_rank": int((energy > energy[index]).sum()),
        "energy_ratio": float(energy[index] / others.max()) if others.size and others.max() > 0 else float("inf"),
        "energy_share": float(energy[index] / energy.sum()),
    }


def without(concepts: dict, index: int) -> dict:
    """The per-concept arrays of `concepts` with concept `index` removed."""
    return {name: np.delete(np.asarray(values), index, axis=0) for name, values in concepts.items()}


# ----------------------------------------------------------------------------- energy and stability
def energy_summary(energy, fractions=(0.9, 0.99)) -> dict:
    """share (c,): cumulative energy share of the m most energetic concepts; concepts_<p>: the
    fewest concepts holding fraction p of the energy, for each p in `fractions`."""
    summary = {"share": metrics.energy_share(np.asarray(energy, dtype=np.float64))}
    for fraction in fractions:
        summary[f"concepts_{fraction:g}"] = metrics.concepts_for_energy(np.asarray(energy, dtype=np.float64), fraction)
    return summary


def stability_matrix(dictionaries, energies=None, top: int | None = None) -> np.ndarray:
    """(s, s) pairwise `metrics.stability` of s dictionaries (diagonal 1); top=n restricts each
    dictionary to its own n most energetic concepts (needs `energies`)."""
    s = len(dictionaries)
    if top is not None and (energies is None or len(energies) != s):
        raise ValueError("stability_matrix(top=...) needs one energy vector per dictionary")
    matrix = np.eye(s)
    for a in range(s):
        for b in range(a + 1, s):
            if top is None:
                value = metrics.stability(dictionaries[a], dictionaries[b])
            else:
                value = metrics.stability(dictionaries[a], dictionaries[b], top=top, energy1=energies[a], energy2=energies[b])
            matrix[a, b] = matrix[b, a] = value
    return matrix


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Mean of the pairwise values (the off-diagonal entries) of a square matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    s = matrix.shape[0]
    if s < 2:
        raise ValueError("a mean pairwise stability needs at least 2 seeds")
    return float((matrix.sum() - np.trace(matrix)) / (s * (s - 1)))


def stability_by_top(dictionaries, energies, tops) -> np.ndarray:
    """Mean pairwise stability over the top-n energetic concepts, for each n in `tops`."""
    return np.array([mean_off_diagonal(stability_matrix(dictionaries, energies, top=int(n))) for n in tops])


def default_tops(c: int) -> list[int]:
    """n = 1, 2, 4, ... up to c, plus c/8 (the paper's 512 of 4096)."""
    tops = {2**p for p in range(int(np.log2(c)) + 1)} | {max(1, c // 8), c}
    return sorted(tops)


def stability_analysis(concepts: list[dict], direction, *, tops=None) -> dict:
    """Energy and stability statistics of several seeds' `seed_concepts`, with and without each
    seed's gap concept. Pure computation (no cache); `energy_stability` caches it."""
    if len(concepts) < 2:
        raise ValueError(f"stability needs at least 2 seeds, got {len(concepts)}")
    c = len(concepts[0]["energy"])
    tops = default_tops(c) if tops is None else sorted(int(n) for n in tops)
    gaps = [gap_concept(cs["dictionary"], cs["energy"], direction) for cs in concepts]
    result = {"c": c, "tops": tops, "gap": gaps}
    for variant, sets in (("all", concepts), ("no_gap", [without(cs, g["index"]) for cs, g in zip(concepts, gaps)])):
        dictionaries = [cs["dictionary"] for cs in sets]
        energies = [cs["energy"] for cs in sets]
        summaries = [energy_summary(e) for e in energies]
        variant_tops = [n for n in tops if n <= len(energies[0])]
        result[variant] = {
            "share": [s["share"].tolist() for s in summaries],
            "concepts_0.9": [s["concepts_0.9"] for s in summaries],
            "concepts_0.99": [s["concepts_0.99"] for s in summaries],
            "matrix_all": stability_matrix(dictionaries).tolist(),
            "matrix_top": stability_matrix(dictionaries, energies, top=max(1, c // 8)).tolist(),
            "tops": variant_tops,
            "stability_by_top": stability_by_top(dictionaries, energies, variant_tops).tolist(),
        }
    # Do the seeds agree on the gap concept itself? Mean pairwise cosine of their gap concepts.
    gap_rows = np.stack([cs["dictionary"][g["index"]] for cs, g in zip(concepts, gaps)]).astype(np.float64)
    gap_rows /= np.linalg.norm(gap_rows, axis=1, keepdims=True).clip(1e-12)
    result["gap_cross_seed_cosine"] = mean_off_diagonal(gap_rows @ gap_rows.T)
    return result


def energy_stability(emb, *, c: int, k: int, seeds: int, steps: int, device: str = "cpu", tops=None) -> dict:
    """Figure 3's numbers for the shared seed SAEs on `emb`, cached (see `stability_analysis`)."""
    parts = {**embedding_key(emb), "c": c, "k": k, "seeds": seeds, "steps": steps,
             "tops": None if tops is None else list(tops)}

    def compute():
        concepts = all_seed_concepts(emb, c=c, k=k, seeds=seeds, steps=steps, device=device)
        return stability_analysis(concepts, modality_direction(emb), tops=tops)

    return cache.get_or_compute("energy-stability", parts, compute, kind="json")


def claims(result: dict) -> dict:
    """The figure's claim values: energy counts and stabilities (means over seeds / seed pairs)."""
    c = result["c"]
    out = {"c": c, "top_n": max(1, c // 8)}
    for variant in ("all", "no_gap"):
        v = result[variant]
        suffix = "" if variant == "all" else "_no_gap"
        out[f"concepts_90{suffix}"] = float(np.mean(v["concepts_0.9"]))
        out[f"concepts_99{suffix}"] = float(np.mean(v["concepts_0.99"]))
        out[f"stability_all{suffix}"] = mean_off_diagonal(np.array(v["matrix_all"]))
        out[f"stability_top{suffix}"] = mean_off_diagonal(np.array(v["matrix_top"]))
    out["gap_cosine"] = float(np.mean([abs(g["cosine"]) for g in result["gap"]]))
    out["gap_energy_ratio"] = float(np.mean([g["energy_ratio"] for g in result["gap"]]))
    out["gap_energy_share"] = float(np.mean([g["energy_share"] for g in result["gap"]]))
    out["gap_energy_rank"] = float(np.mean([g["energy_rank"] for g in result["gap"]]))
    out["gap_cross_seed_cosine"] = result["gap_cross_seed_cosine"]
    return out


# ----------------------------------------------------------------------------- figures
def energy_share_figure(result: dict, *, title: str = "Cumulative energy share of the most energetic concepts"):
    """One curve per seed (solid: all concepts, dotted: without the gap concept), 90% / 99% lines."""
    import plotly.graph_objects as go

    from .. import plots

    fig = go.Figure()
    colors = plots.COLORS["sequence"]
    for variant, dash in (("all", "solid"), ("no_gap", "dot")):
        for s, share in enumerate(result[variant]["share"]):
            fig.add_trace(go.Scatter(x=np.arange(1, len(share) + 1), y=share, mode="lines", line=dict(color=colors[s % len(colors)], dash=dash),
                                     name=f"seed {s}" + ("" if variant == "all" else ", no gap concept"),
                                     legendgroup=variant))
    for level in (0.9, 0.99):
        fig.add_hline(y=level, line=dict(color=plots.COLORS["reference"], width=1, dash="dash"), annotation_text=f"{level:.0%}")
    fig.update_xaxes(type="log", title="number of concepts m (most energetic first)")
    fig.update_yaxes(title="share of the total energy", range=[0, 1.02])
    return plots.layout(fig, title)


def stability_matrix_figure(result: dict, variant: str = "all", *, title: str | None = None):
    """Two heatmaps: pairwise stability over all concepts, and over each run's top c/8."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .. import plots

    v, top = result[variant], max(1, result["c"] // 8)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("all concepts", f"top {top} by energy"), horizontal_spacing=0.12)
    for col, key in ((1, "matrix_all"), (2, "matrix_top")):
        matrix = np.array(v[key])
        labels = [f"seed {s}" for s in range(len(matrix))]
        fig.add_trace(go.Heatmap(z=matrix, x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis", showscale=col == 2,
                                 text=np.round(matrix, 2), texttemplate="%{text}"), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    return plots.layout(fig, title or "Stability (mean matched cosine) between seeds", height=420)


def stability_curve_figure(result: dict, *, title: str = "Stability of the top-n energetic concepts"):
    """Mean pairwise stability as a function of n, with and without the gap concept."""
    import plotly.graph_objects as go

    from .. import plots

    fig = go.Figure()
    for variant, name, dash in (("all", "all concepts", "solid"), ("no_gap", "without the gap concept", "dot")):
        v = result[variant]
        fig.add_trace(go.Scatter(x=v["tops"], y=v["stability_by_top"], mode="lines+markers", name=name,
                                 line=dict(color=plots.COLORS["methods"]["batchtopk"], dash=dash)))
    # A trace, not add_vline: plotly misplaces add_vline's annotation on a log axis.
    fig.add_trace(go.Scatter(x=[max(1, result["c"] // 8)] * 2, y=[0, 1], mode="lines", name="n = c/8 (paper: 512 of 4096)",
                             line=dict(color=plots.COLORS["reference"], width=1, dash="dash")))
    fig.update_xaxes(type="log", title="n (each run's n most energetic concepts)")
    fig.update_yaxes(title="mean pairwise stability", range=[0, 1.02])
    return plots.layout(fig, title)
