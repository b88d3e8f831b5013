"""Figures 5 and 6: modality scores of concepts, and concepts as modality classifiers.

Figure 5. ModalityScore_i = E_img[z_i] / (E_img[z_i] + E_txt[z_i]) (`metrics.modality_score`),
histogrammed plainly (each concept counts 1) and energy-weighted (concept i counts Energy_i),
and the share of the energy held by unimodal concepts:

    unimodal energy fraction = sum of Energy_i over {i : score_i < 0.1 or score_i > 0.9} / sum_i Energy_i

Figure 6. Each concept direction as a one-threshold image/text classifier
(`metrics.modality_classifier_accuracy`, balanced accuracy: 0.5 blind to modality, 1.0 aligned
with it), histogrammed plainly and energy-weighted; the reference is the accuracy of the
modality direction g = mean(image rows) - mean(text rows) itself.

Both reuse the shared seed SAEs through `stability.seed_concepts` and report every statistic with
and without each seed's modality-gap concept (`stability.gap_concept`).
"""

from __future__ import annotations

import numpy as np

from .. import cache, metrics
from .stability import all_seed_concepts, embedding_key, gap_concept, modality_direction, without

UNIMODAL_LOW, UNIMODAL_HIGH = 0.1, 0.9
SCORE_BINS = np.linspace(0.0, 1.0, 21)
ACCURACY_BINS = np.linspace(0.5, 1.0, 26)


def histogram(values, bins, weights=None, *, normalise: bool = True) -> np.ndarray:
    """Counts (or weight sums) of `values` in `bins` (edges, last bin closed); NaN values are left
    out. normalise=True divides by the total, so plain and energy-weighted histograms compare."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != values.shape:
        raise ValueError(f"weights have shape {weights.shape} but values have {values.shape}: one weight per value")
    keep = np.isfinite(values)
    counts, _ = np.histogram(values[keep], bins=bins, weights=weights[keep])
    if normalise:
        total = counts.sum()
        if total <= 0:
            raise ValueError("nothing to histogram: every value is NaN or every weight is zero")
        counts = counts / total
    return counts


def unimodal_energy_fraction(scores, energy, low: float = UNIMODAL_LOW, high: float = UNIMODAL_HIGH) -> float:
    """Share of the total energy held by concepts with modality score < low or > high.
    Concepts that never fire (NaN score) have zero energy and count nowhere."""
    scores = np.asarray(scores, dtype=np.float64)
    energy = np.asarray(energy, dtype=np.float64)
    if scores.shape != energy.shape:
        raise ValueError(f"scores {scores.shape} and energy {energy.shape} must both be (c,)")
    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    total = energy.sum()
    if total <= 0:
        raise ValueError("all energies are zero: no concept ever fires")
    unimodal = np.isfinite(scores) & ((scores < low) | (scores > high))
    return float(energy[unimodal].sum() / total)


def unimodal_fraction(scores, low: float = UNIMODAL_LOW, high: float = UNIMODAL_HIGH) -> float:
    """Share of the firing concepts (finite score) that are unimodal, each concept counted once."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise ValueError("no concept fires: every modality score is NaN")
    return float(((finite < low) | (finite > high)).mean())


def weighted_mean(values, weights) -> float:
    values, weights = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(values)
    return float((values[keep] * weights[keep]).sum() / weights[keep].sum())


def _row_sample(rows, max_rows: int | None, seed: int) -> np.ndarray:
    """At most `max_rows` rows drawn without replacement (sorted: sequential memmap reads)."""
    if max_rows is None or len(rows) <= max_rows:
        return np.asarray(rows, dtype=np.float32)
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False))
    return np.asarray(rows[chosen], dtype=np.float32)


# ----------------------------------------------------------------------------- figure 5
def score_analysis(concepts: list[dict], direction) -> dict:
    """Per seed: modality scores, energies and the unimodal energy fraction, with and without the
    seed's gap concept. Pure computation; `modality_scores` caches it."""
    result = {"seeds": []}
    for cs in concepts:
        gap = gap_concept(cs["dictionary"], cs["energy"], direction)
        entry = {"gap": gap, "gap_score": float(cs["modality_score"][gap["index"]])}
        for variant, sub in (("all", cs), ("no_gap", without(cs, gap["index"]))):
            scores, energy = sub["modality_score"], sub["energy"]
            entry[variant] = {
                "scores": [None if not np.isfinite(s) else float(s) for s in scores],
                "energy": energy.tolist(),
                "hist_plain": histogram(scores, SCORE_BINS).tolist(),
                "hist_energy": histogram(scores, SCORE_BINS, energy).tolist(),
                "unimodal_energy_fraction": unimodal_energy_fraction(scores, energy),
                "unimodal_fraction": unimodal_fraction(scores),
                "dead_concepts": int((~np.isfinite(scores)).sum()),
            }
        result["seeds"].append(entry)
    result["bins"] = SCORE_BINS.tolist()
    return result


def modality_scores(emb, *, c: int, k: int, seeds: int, steps: int, device: str = "cpu") -> dict:
    """Figure 5's numbers for the shared seed SAEs on `emb`, cached (see `score_analysis`)."""
    parts = {**embedding_key(emb), "c": c, "k": k, "seeds": seeds, "steps": steps}

    def compute():
        concepts = all_seed_concepts(emb, c=c, k=k, seeds=seeds, steps=steps, device=device)
        return score_analysis(concepts, modality_direction(emb))

    return cache.get_or_compute("modality-scores", parts, compute, kind="json")


def score_claims(result: dict) -> dict:
    """Means over seeds of the unimodal energy fraction and unimodal concept fraction."""
    out = {}
    for variant in ("all", "no_gap"):
        suffix = "" if variant == "all" else "_no_gap"
        out[f"unimodal_energy_fraction{suffix}"] = float(np.mean([s[variant]["unimodal_energy_fraction"] for s in result["seeds"]]))
        out[f"unimodal_concept_fraction{suffix}"] = float(np.mean([s[variant]["unimodal_fraction"] for s in result["seeds"]]))
    out["gap_concept_score"] = float(np.mean([s["gap_score"] for s in result["seeds"]]))
    return out


# ----------------------------------------------------------------------------- figure 6
def direction_accuracy(image_rows, text_rows, direction) -> float:
    """Balanced accuracy of one direction (e.g. the modality direction g) as a threshold classifier."""
    return float(metrics.modality_classifier_accuracy(image_rows, text_rows, np.asarray(direction, dtype=np.float32)[None])[0])


def classifier_analysis(concepts: list[dict], image_rows, text_rows, direction) -> dict:
    """Per seed: each concept's classifier accuracy and energy, plain and energy-weighted
    histograms, with and without the gap concept; and the modality direction's own accuracy."""
    result = {"direction_accuracy": direction_accuracy(image_rows, text_rows, direction), "seeds": []}
    for cs in concepts:
        gap = gap_concept(cs["dictionary"], cs["energy"], direction)
        accuracy = metrics.modality_classifier_accuracy(image_rows, text_rows, cs["dictionary"])
        entry = {"gap": gap, "gap_accuracy": float(accuracy[gap["index"]])}
        for variant, index in (("all", None), ("no_gap", gap["index"])):
            acc = accuracy if index is None else np.delete(accuracy, index)
            energy = cs["energy"] if index is None else np.delete(cs["energy"], index)
            scores = cs["modality_score"] if index is None else np.delete(cs["modality_score"], index)
            unimodal = np.isfinite(scores) & ((scores < UNIMODAL_LOW) | (scores > UNIMODAL_HIGH))
            entry[variant] = {
                "accuracy": acc.tolist(),
                "energy": energy.tolist(),
                "hist_plain": histogram(acc, ACCURACY_BINS).tolist(),
                "hist_energy": histogram(acc, ACCURACY_BINS, energy).tolist(),
                "mean_accuracy": float(acc.mean()),
                "energy_weighted_accuracy": weighted_mean(acc, energy),
                # The projection effect: concepts that fire for one modality only although their
                # direction separates the modalities poorly.
                "unimodal_below_0.75": int((unimodal & (acc < 0.75)).sum()),
                "unimodal": int(unimodal.sum()),
            }
        result["seeds"].append(entry)
    result["bins"] = ACCURACY_BINS.tolist()
    return result


def modality_classifiers(emb, *, c: int, k: int, seeds: int, steps: int, device: str = "cpu",
                         max_rows: int | None = 20_000) -> dict:
    """Figure 6's numbers for the shared seed SAEs on `emb`, cached. Accuracies are measured on at
    most `max_rows` rows per modality (a fixed random sample), enough for 3-digit accuracies."""
    parts = {**embedding_key(emb), "c": c, "k": k, "seeds": seeds, "steps": steps, "max_rows": max_rows}

    def compute():
        concepts = all_seed_concepts(emb, c=c, k=k, seeds=seeds, steps=steps, device=device)
        image_rows = _row_sample(emb.image, max_rows, seed=0)
        text_rows = _row_sample(emb.text, max_rows, seed=1)
        return classifier_analysis(concepts, image_rows, text_rows, modality_direction(emb))

    return cache.get_or_compute("modality-classifiers", parts, compute, kind="json")


def classifier_claims(result: dict) -> dict:
    out = {"direction_accuracy": result["direction_accuracy"]}
    for variant in ("all", "no_gap"):
        suffix = "" if variant == "all" else "_no_gap"
        seeds = [s[variant] for s in result["seeds"]]
        out[f"mean_accuracy{suffix}"] = float(np.mean([s["mean_accuracy"] for s in seeds]))
        out[f"energy_weighted_accuracy{suffix}"] = float(np.mean([s["energy_weighted_accuracy"] for s in seeds]))
        out[f"unimodal_below_0.75{suffix}"] = float(np.mean([s["unimodal_below_0.75"] for s in seeds]))
    out["gap_concept_accuracy"] = float(np.mean([s["gap_accuracy"] for s in result["seeds"]]))
    return out


# ----------------------------------------------------------------------------- figures
def pooled_histograms(result: dict, variant: str = "all") -> dict[str, np.ndarray]:
    """Plain and energy-weighted histograms averaged over seeds (each seed's sums to 1)."""
    seeds = [s[variant] for s in result["seeds"]]
    return {"plain": np.mean([s["hist_plain"] for s in seeds], axis=0),
            "energy": np.mean([s["hist_energy"] for s in seeds], axis=0)}


def histogram_figure(result: dict, *, variant: str = "all", x_title: str, title: str, reference: float | None = None,
                     reference_name: str = "", modality_colors: bool = False):
    """Side-by-side plain and energy-weighted histograms pooled over seeds; optional vertical reference line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .. import plots

    bins = np.array(result["bins"])
    centres, widths = (bins[1:] + bins[:-1]) / 2, np.diff(bins)
    pooled = pooled_histograms(result, variant)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("each concept counts 1", "each concept counts its energy"),
                        horizontal_spacing=0.14)
    marker = (dict(color=centres, colorscale=plots.MODALITY_SCALE, cmin=0, cmax=1, line=dict(width=0.5, color="#666"))
              if modality_colors else dict(color=plots.COLORS["methods"]["batchtopk"]))
    for col, key in ((1, "plain"), (2, "energy")):
        fig.add_trace(go.Bar(x=centres, y=pooled[key], width=widths, marker=marker, showlegend=False), row=1, col=col)
        if reference is not None:
            label = {"annotation_text": reference_name, "annotation_position": "top left"} if col == 1 else {}
            fig.add_vline(x=reference, line=dict(color=plots.COLORS["reference"], dash="dash"), row=1, col=col, **label)
    pad = 0.01 * (bins[-1] - bins[0])  # so a reference line on the last edge stays visible
    fig.update_xaxes(title=x_title, range=[bins[0] - pad, bins[-1] + pad])
    fig.update_yaxes(title="share of concepts", row=1, col=1)
    fig.update_yaxes(title="share of energy", row=1, col=2)
    return plots.layout(fig, title, height=400)
