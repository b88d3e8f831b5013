"""Figure 7: the SAE projection effect.

A BatchTopK SAE fires concept i on embedding x when its encoder pre-activation passes the
selection line learned in training:

    p_i(x) = <x - b_dec, W_enc,i> + b_enc,i          z_i(x) = p_i(x) * [p_i(x) > theta]

(theta: the BatchTopK inference threshold; a TopK SAE instead keeps each row's k largest p, so
its line is the row's k-th largest pre-activation). If the image and text distributions of p_i
overlap (the direction barely tells the modalities apart) but only one modality's tail passes
theta, the concept fires for one modality only though its direction is nearly modality-blind.

The search: for every concept, the balanced accuracy of its decoder direction D_i as a
one-threshold modality classifier (`metrics.modality_classifier_accuracy`, 0.5 = blind to
modality), the same for its encoder direction (the pre-activation itself: a threshold classifier
is unchanged by the constant offset and positive scale, so this is the accuracy of p_i), and its
modality score. Projection-effect concepts have accuracy <= `max_accuracy` yet modality score
<= `margin` or >= 1 - `margin`.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics
from ..codes import encode_codes


def _rows(x) -> torch.Tensor:
    return x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


@torch.no_grad()
def pre_activations(sae, rows, concepts=None, *, batch_size: int = 8192, device: str = "cpu") -> np.ndarray:
    """(n, m) encoder pre-activations p of `rows` for `concepts` (all when None)."""
    sae = sae.to(device).eval()
    index = None if concepts is None else torch.as_tensor(np.atleast_1d(concepts), dtype=torch.long, device=device)
    rows = _rows(rows)
    parts = []
    for start in range(0, len(rows), batch_size):
        pre = sae.pre_codes(rows[start : start + batch_size].to(device))
        parts.append(pre if index is None else pre[:, index])
    width = sae.c if index is None else len(index)
    return torch.cat(parts).cpu().numpy() if parts else np.zeros((0, width), np.float32)


def selection_line(sae, pre_all: np.ndarray | None = None) -> np.ndarray | float:
    """BatchTopK: the scalar inference threshold theta. TopK: the k-th largest pre-activation of
    each row of `pre_all` ((n, c), all concepts), one line per row."""
    if hasattr(sae, "threshold"):
        return float(sae.threshold)
    if hasattr(sae, "k"):
        if pre_all is None:
            raise ValueError("a TopK SAE's selection line is per row: pass pre_all, the (n, c) pre-activations")
        return np.sort(pre_all, axis=1)[:, -sae.k]
    raise ValueError(f"{type(sae).__name__} has no top-k selection; use a BatchTopK or TopK SAE")


def concept_table(sae, image_rows, text_rows, *, device: str = "cpu") -> dict[str, np.ndarray]:
    """Per-concept arrays: accuracy_decoder, accuracy_encoder, modality_score, energy (all rows),
    fire_image / fire_text (fraction of each modality's rows where the concept fires)."""
    image_codes = encode_codes(sae, image_rows, device=device)
    text_codes = encode_codes(sae, text_rows, device=device)
    energy_image, energy_text = metrics.energy(image_codes), metrics.energy(text_codes)
    n_image, n_text = len(image_rows), len(text_rows)
    W_enc = sae.W_enc.detach().cpu().float()
    image_rows, text_rows = _rows(image_rows), _rows(text_rows)
    fires = [np.bincount(codes.col_indices().numpy(), weights=(codes.values() != 0).double().numpy(), minlength=sae.c) / len(rows)
             for codes, rows in ((image_codes, image_rows), (text_codes, text_rows))]
    return {
        "accuracy_decoder": metrics.modality_classifier_accuracy(image_rows, text_rows, sae.dictionary.detach().cpu()),
        "accuracy_encoder": metrics.modality_classifier_accuracy(image_rows, text_rows, W_enc),
        "modality_score": metrics.modality_score(image_codes, text_codes),
        "energy": (n_image * energy_image + n_text * energy_text) / (n_image + n_text),
        "fire_image": fires[0],
        "fire_text": fires[1],
    }


def find_projection_concepts(table: dict, *, max_accuracy: float = 0.7, margin: float = 0.1,
                             accuracy: str = "accuracy_decoder") -> np.ndarray:
    """Concepts with accuracy <= max_accuracy and modality score <= margin or >= 1 - margin,
    most energetic first (concepts that never fire are left out)."""
    if accuracy not in ("accuracy_decoder", "accuracy_encoder"):
        raise ValueError(f"accuracy must be 'accuracy_decoder' or 'accuracy_encoder', got {accuracy!r}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    score = table["modality_score"]
    fired = np.isfinite(score)
    one_sided = fired & ((np.nan_to_num(score, nan=0.5) <= margin) | (np.nan_to_num(score, nan=0.5) >= 1 - margin))
    chosen = np.flatnonzero(one_sided & (table[accuracy] <= max_accuracy))
    return chosen[np.argsort(-table["energy"][chosen], kind="stable")]


def concept_projection(sae, image_rows, text_rows, concept: int, *, device: str = "cpu") -> dict:
    """What figure 7 plots for one concept: p for every image and text row, the selection line
    theta, and the fraction of each modality above it. (TopK: the per-row lines, and the
    fractions of rows whose p passes their own line.)"""
    concept = int(concept)
    if not 0 <= concept < sae.c:
        raise ValueError(f"concept {concept} is out of range: the SAE has {sae.c} concepts")
    out = {"concept": concept}
    for name, rows in (("image", image_rows), ("text", text_rows)):
        if hasattr(sae, "threshold"):
            pre = pre_activations(sae, rows, [concept], device=device)[:, 0]
            line = selection_line(sae)
        else:
            pre_all = pre_activations(sae, rows, device=device)
            pre, line = pre_all[:, concept], selection_line(sae, pre_all)
        out[name] = pre
        out[f"line_{name}"] = line
        out[f"above_{name}"] = float(np.mean((pre > line) & (pre > 0)))
    D = sae.dictionary.detach().cpu()
    out["accuracy_decoder"] = float(metrics.modality_classifier_accuracy(_rows(image_rows), _rows(text_rows), D[[concept]])[0])
    out["accuracy_encoder"] = float(metrics.modality_classifier_accuracy(
        out["image"][:, None], out["text"][:, None], np.ones((1, 1), np.float32))[0])
    return out


def claims(table: dict, found: np.ndarray, *, max_accuracy: float, margin: float) -> dict:
    """Claim values: how many concepts (and what energy share) show the projection effect."""
    fired = np.isfinite(table["modality_score"])
    energy = table["energy"]
    return {
        "max_accuracy": max_accuracy,
        "margin": margin,
        "projection_effect_concepts": int(len(found)),
        "fired_concepts": int(fired.sum()),
        "projection_effect_energy_share": float(energy[found].sum() / energy.sum()),
        "median_accuracy_decoder": float(np.median(table["accuracy_decoder"][fired])),
        "unimodal_fraction": float(np.mean(np.abs(table["modality_score"][fired] - 0.5) >= 0.5 - margin)),
    }


# ----------------------------------------------------------------------------- figures
def projection_figure(projection: dict, *, bins: int = 60, title: str | None = None):
    """Overlaid histograms of p for images (orange) and texts (blue) with the selection line."""
    import plotly.graph_objects as go

    from ..plots import COLORS

    concept = projection["concept"]
    fig = go.Figure()
    for name, colour in (("text", COLORS["text"]), ("image", COLORS["image"])):
        fig.add_trace(go.Histogram(x=projection[name], name=f"{name} ({100 * projection[f'above_{name}']:.1f}% fire)",
                                   nbinsx=bins, histnorm="probability", marker_color=colour, opacity=0.6))
    line = projection["line_image"]
    if np.ndim(line) == 0:
        fig.add_vline(x=float(line), line_dash="dot", line_color="black",
                      annotation_text="top-k selection line", annotation_position="top right")
    fig.update_layout(barmode="overlay", xaxis_title=f"encoder pre-activation of concept {concept}",
                      yaxis_title="share of rows",
                      title=title or (f"Concept {concept}: direction accuracy {projection['accuracy_decoder']:.2f}, "
                                      f"fires on images {100 * projection['above_image']:.1f}% / texts "
                                      f"{100 * projection['above_text']:.1f}%"))
    return fig


def search_figure(table: dict, found, *, max_accuracy: float, margin: float, title: str = "Direction vs usage"):
    """Scatter of every fired concept: modality-classifier accuracy of its direction (x) against its
    modality score (y), sized by energy; the projection-effect region is shaded."""
    import plotly.graph_objects as go

    score = table["modality_score"]
    fired = np.flatnonzero(np.isfinite(score))
    energy = table["energy"][fired]
    is_found = np.isin(fired, found)
    fig = go.Figure()
    for y0, y1 in ((0, margin), (1 - margin, 1)):
        fig.add_shape(type="rect", x0=0.5, x1=max_accuracy, y0=y0, y1=y1, fillcolor="rgba(200, 0, 0, 0.08)", line_width=0)
    fig.add_trace(go.Scatter(
        x=table["accuracy_decoder"][fired], y=score[fired], mode="markers",
        marker=dict(size=4 + 26 * np.sqrt(energy / energy.max()), color=np.where(is_found, "#c0392b", "#7f8c8d"),
                    opacity=0.7, line=dict(width=0)),
        hovertext=[f"concept {i}<br>accuracy {a:.2f}<br>score {s:.2f}" for i, a, s in
                   zip(fired, table["accuracy_decoder"][fired], score[fired])], hoverinfo="text", showlegend=False))
    fig.update_layout(title=title, xaxis_title="accuracy of the concept direction as a modality classifier",
                      yaxis_title="modality score (0 text-only, 1 image-only)", xaxis_range=[0.48, 1.01])
    return fig
