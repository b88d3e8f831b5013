"""Beyond the paper: what makes the modality gap and the unimodal concepts appear in toyclip.

Small toyclip models are retrained from scratch under different contrastive settings
(`vlmsae.models.toyclip.train_toyclip`, reduced: a few thousand pairs, a few hundred steps),
each embeds a held-out set of shapes pairs (split "test"), and on each we measure

    gap          = || mean(image rows) - mean(text rows) ||_2          (rows L2-normalised)
    separability = balanced accuracy of the best threshold on the projection onto the gap
                   direction, the direction fitted on one half of the rows and scored on the other
    retrieval    = image -> text top-1 accuracy on the held-out pairs (did the model learn?)

and of a small BatchTopK SAE trained on that model's embeddings

    unimodal_fraction = share of fired concepts with modality score <= 0.1 or >= 0.9
    unimodal_energy   = share of the energy held by those concepts
    bimodality        = Sarle's coefficient (skew^2 + 1) / (excess kurtosis + 3 (n-1)^2 / ((n-2)(n-3)))
                        of the modality scores: above 5/9 (a uniform law) leans bimodal

Settings are `ToyCLIPConfig` overrides. The grid asked for is 2x2: temperature fixed vs
learned, captions noisy vs fully descriptive. `train_toyclip` fixes the temperature and always
trains on the noisy captions; it offers the temperature *value*. So the grid holds what the
installed toyclip supports (`available_settings`): the fixed temperatures always, and the
learned-temperature and clean-caption settings as soon as `ToyCLIPConfig` has the fields
`learn_temperature` and `clean_captions`.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import cache, metrics
from ..codes import encode_codes
from ..sae import BatchTopKSAE
from ..train import train_sae

#: every setting of the ablation, by name: ToyCLIPConfig overrides
SETTINGS = {
    "fixed tau=0.01, noisy captions": {"temperature": 0.01},
    "fixed tau=0.1, noisy captions": {"temperature": 0.1},
    "learned tau, noisy captions": {"temperature": 0.07, "learn_temperature": True},
    "fixed tau=0.01, clean captions": {"temperature": 0.01, "clean_captions": True},
    "learned tau, clean captions": {"temperature": 0.07, "learn_temperature": True, "clean_captions": True},
}

FULL = {"n_pairs": 8000, "steps": 300, "batch_size": 128, "n_eval": 2000, "sae_c": 128, "sae_k": 8, "sae_steps": 600}
QUICK = {"n_pairs": 2000, "steps": 60, "batch_size": 64, "n_eval": 600, "sae_c": 64, "sae_k": 4, "sae_steps": 150}


def available_settings() -> dict[str, dict]:
    """The settings of `SETTINGS` the installed `train_toyclip` can run (its config has every field)."""
    from ..models.toyclip import ToyCLIPConfig

    fields = set(ToyCLIPConfig.__dataclass_fields__)
    return {name: overrides for name, overrides in SETTINGS.items() if set(overrides) <= fields}


def missing_settings() -> dict[str, list[str]]:
    """Settings left out, with the ToyCLIPConfig fields they need."""
    from ..models.toyclip import ToyCLIPConfig

    fields = set(ToyCLIPConfig.__dataclass_fields__)
    return {name: sorted(set(o) - fields) for name, o in SETTINGS.items() if not set(o) <= fields}


# ----------------------------------------------------------------------------- measures
def modality_gap(image, text, *, seed: int = 0) -> dict[str, float]:
    """gap (norm of the mean difference) and held-out separability along the fitted gap direction."""
    image = np.asarray(image, dtype=np.float64)
    text = np.asarray(text, dtype=np.float64)
    if len(image) < 4 or len(text) < 4:
        raise ValueError(f"need at least 4 rows of each modality, got {len(image)} images and {len(text)} texts")
    rng = np.random.default_rng(seed)
    image, text = image[rng.permutation(len(image))], text[rng.permutation(len(text))]
    fit_i, fit_t = len(image) // 2, len(text) // 2
    direction = image[:fit_i].mean(0) - text[:fit_t].mean(0)
    accuracy = metrics.modality_classifier_accuracy(image[fit_i:], text[fit_t:], direction[None])[0]
    return {"gap": float(np.linalg.norm(image.mean(0) - text.mean(0))), "separability": float(accuracy)}


def bimodality_coefficient(values) -> float:
    """Sarle's bimodality coefficient b = (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))), g the sample
    skewness and k the sample excess kurtosis (bias-corrected); 5/9 for a uniform law, 1 for two points."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    n = len(values)
    if n < 4:
        raise ValueError(f"the bimodality coefficient needs at least 4 values, got {n}")
    if np.ptp(values) == 0:
        return float("nan")
    skew = stats.skew(values, bias=False)
    kurt = stats.kurtosis(values, bias=False)
    return float((skew**2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def unimodal_statistics(score, energy, *, margin: float = 0.1) -> dict[str, float]:
    """Share of fired concepts (and of their energy) with modality score <= margin or >= 1 - margin."""
    score, energy = np.asarray(score, dtype=np.float64), np.asarray(energy, dtype=np.float64)
    fired = np.isfinite(score)
    unimodal = fired & (np.abs(np.nan_to_num(score) - 0.5) >= 0.5 - margin)
    return {"unimodal_fraction": float(unimodal.sum() / max(fired.sum(), 1)),
            "unimodal_energy": float(energy[unimodal].sum() / energy[fired].sum()),
            "bimodality": bimodality_coefficient(score[fired])}


def sae_statistics(image, text, *, c: int, k: int, steps: int, seed: int = 0, device: str = "cpu") -> dict:
    """Modality statistics of a BatchTopK SAE (c concepts, k per row) trained on image and text rows."""
    rows = torch.from_numpy(np.concatenate([image, text]).astype(np.float32))
    torch.manual_seed(seed)
    sae = BatchTopKSAE(rows.shape[1], c, k)
    history = train_sae(sae, rows, steps=steps, batch_size=min(512, len(rows)), lr=1e-3, seed=seed, device=device,
                        progress=False)
    image_codes = encode_codes(sae, image, device=device)
    text_codes = encode_codes(sae, text, device=device)
    score = metrics.modality_score(image_codes, text_codes)
    n_i, n_t = len(image), len(text)
    energy = (n_i * metrics.energy(image_codes) + n_t * metrics.energy(text_codes)) / (n_i + n_t)
    x_hat = sae.decode(torch.cat([image_codes.to_dense(), text_codes.to_dense()]).to(sae.W_dec.device)).detach().cpu()
    out = unimodal_statistics(score, energy)
    out["sae_r2"] = metrics.r2(rows, x_hat)
    out["modality_score"] = np.nan_to_num(score, nan=0.5).tolist()
    out["energy"] = energy.tolist()
    del history
    return out


# ----------------------------------------------------------------------------- the ablation
def run_setting(name: str, *, sizes: dict, seed: int = 0, device: str = "cpu") -> dict:
    """Train one toyclip setting, embed held-out pairs, measure the gap and the SAE (cached)."""
    settings = available_settings()
    if name not in settings:
        raise ValueError(f"setting {name!r} is not available: use one of {sorted(settings)}"
                         + (f"; {name!r} needs ToyCLIPConfig fields {missing_settings()[name]}" if name in SETTINGS else ""))
    overrides = settings[name]
    parts = {"setting": name, "overrides": overrides, "seed": seed, **sizes}

    def compute():
        from ..data import shapes
        from ..models.toyclip import retrieval_accuracy, train_toyclip

        model, history = train_toyclip(sizes["n_pairs"], sizes["steps"], seed, batch_size=sizes["batch_size"],
                                       device=device, progress=False, **overrides)
        batch = shapes.render_shapes(sizes["n_eval"], seed, "test")
        captions = [c[0] for c in batch.captions]
        if overrides.get("clean_captions"):
            captions = [shapes.full_caption(batch.attributes, i) for i in range(sizes["n_eval"])]
        with torch.no_grad():
            image = torch.nn.functional.normalize(model.encode_image_array(batch.images).float(), dim=-1).cpu()
            text = torch.nn.functional.normalize(model.encode_texts(captions).float(), dim=-1).cpu()
        out = {"setting": name, **overrides, "train_seconds": history["seconds"],
               "final_loss": float(np.mean(history["loss"][-20:])),
               "retrieval_top1": retrieval_accuracy(image, text, ks=(1,))["top1"],
               **modality_gap(image.numpy(), text.numpy(), seed=seed)}
        out.update(sae_statistics(image.numpy(), text.numpy(), c=sizes["sae_c"], k=sizes["sae_k"],
                                  steps=sizes["sae_steps"], seed=seed, device=device))
        return out

    return cache.get_or_compute("modality-gap-ablation", parts, compute, kind="json")


def run_ablation(names=None, *, quick: bool = False, seed: int = 0, device: str = "cpu") -> list[dict]:
    """`run_setting` for each available setting (or the given names), in order."""
    sizes = QUICK if quick else FULL
    names = list(available_settings()) if names is None else list(names)
    return [run_setting(name, sizes=sizes, seed=seed, device=device) for name in names]


TABLE_COLUMNS = ("setting", "retrieval_top1", "gap", "separability", "unimodal_fraction", "unimodal_energy",
                 "bimodality", "sae_r2", "train_seconds")


def table_rows(results: list[dict]) -> list[dict]:
    """The ablation table: one row per setting, the columns of TABLE_COLUMNS."""
    return [{column: r.get(column) for column in TABLE_COLUMNS} for r in results]


def scores_figure(results: list[dict], *, title: str = "Modality scores of each setting's SAE concepts"):
    """Energy-weighted histograms of modality scores, one trace per setting."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for r in results:
        # scores of exactly 1 go into the last bin [0.95, 1) rather than a bin of their own
        fig.add_trace(go.Histogram(x=np.minimum(r["modality_score"], 1 - 1e-9), y=r["energy"], histfunc="sum", histnorm="probability",
                                   xbins=dict(start=0, end=1, size=0.05), name=r["setting"], opacity=0.55))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="modality score (0 text-only, 1 image-only)",
                      yaxis_title="share of energy", xaxis_range=[0, 1])
    return fig
