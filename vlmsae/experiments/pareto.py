"""Figure 1: the sparsity-expressivity trade-off, R2 against L0, for SAEs and classic methods.

Every method is fitted on training rows and scored on held-out rows of the same embedding set
(images and captions mixed, a fixed random split):

    R2 = 1 - ||A - A_hat||_F^2 / ||A - mean(A)||_F^2     per-dimension mean (`metrics.r2`)
    L0 = mean number of non-zero codes per row            (`metrics.l0`)

Methods and their sparsity knob (c concepts / atoms each, except PCA):

    topk, batchtopk     k, the non-zeros per example (BatchTopK: k on average over a batch)
    jumprelu            the L0 penalty coefficient (loss = MSE + sparsity * L0); threshold
                        and bandwidth start at 0.05 (`JUMPRELU_KWARGS`), the scale of unit-norm data
    pca                 the number of components (dense codes: L0 = components)
    kmeans              none: one atom per example (L0 = 1), c atoms
    seminmf             top_k codes kept per example
    sparse_coding       k atoms per example (orthogonal matching pursuit)

A point is non-dominated (on the Pareto front) when no other point has both a lower or equal
L0 and a higher or equal R2, one of them strictly. Each point is cached on its own (a sweep
interrupted half-way resumes), and the whole sweep once more under one key.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import cache, metrics
from ..baselines import PCA, KMeans, SemiNMF, SparseCoding
from ..codes import encode_codes
from ..pipeline import make_sae
from ..train import train_sae
from .stability import embedding_key

SAE_METHODS = ("topk", "batchtopk", "jumprelu")
BASELINE_METHODS = ("pca", "kmeans", "seminmf", "sparse_coding")
METHODS = SAE_METHODS + BASELINE_METHODS
DEFAULT_JUMPRELU_SPARSITIES = (1e-3, 3e-3, 1e-2, 3e-2)
# The book's sweep (figure 1 and the claims page): every SAE point trains its own SAE, so the
# sweep is kept to 4 values of k and shorter training than the shared seed SAEs.
BOOK_SIZES = {"ks": (2, 4, 8, 16), "sparsities": (1e-3, 1e-2, 3e-2), "steps": 1000, "n_train": 10_000, "n_test": 4_000}
QUICK_SIZES = {"ks": (2, 8), "sparsities": (1e-3, 1e-2), "steps": 150, "n_train": 2_000, "n_test": 1_000}
# JumpReLU's own defaults (threshold and bandwidth 1e-3) suit raw activations; on unit-norm
# embeddings pre-codes are ~0.1, and a threshold that starts at 1e-3 barely moves in a few
# thousand Adam steps (it is learned in log space), so every sparsity gives the same L0.
JUMPRELU_KWARGS = {"init_threshold": 0.05, "bandwidth": 0.05}


def default_ks(c: int, d: int) -> list[int]:
    """k = 1, 2, 4, ... up to min(32, c, d): the L0 range of the paper's sweep on small models."""
    return [k for k in (1, 2, 4, 8, 16, 32) if k <= min(c, d)]


def split_rows(emb, *, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random train and test rows of `emb.all` (images and texts mixed), as float32 arrays."""
    total = len(emb.all)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if n_train + n_test > total:
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {total} rows: lower them or embed more pairs")
    chosen = np.random.default_rng(seed).permutation(total)[: n_train + n_test]
    train, test = np.sort(chosen[:n_train]), np.sort(chosen[n_train:])  # sorted: sequential memmap reads
    return np.asarray(emb.all[train], dtype=np.float32), np.asarray(emb.all[test], dtype=np.float32)


def make_method(method: str, knob, *, c: int, d: int, device: str = "cpu", seed: int = 0):
    """An unfitted estimator of `method` at sparsity `knob` (see the module docstring)."""
    if method in ("topk", "batchtopk"):
        return make_sae(method, d, c, int(knob))
    if method == "jumprelu":
        return make_sae(method, d, c, sparsity=float(knob), **JUMPRELU_KWARGS)
    if method == "pca":
        return PCA(int(knob), device=device, seed=seed)
    if method == "kmeans":
        return KMeans(c, device=device, seed=seed)
    if method == "seminmf":
        return SemiNMF(c, top_k=int(knob), device=device, seed=seed)
    if method == "sparse_coding":
        return SparseCoding(c, int(knob), device=device, seed=seed)
    raise ValueError(f"unknown method {method!r}: use one of {METHODS}")


def evaluate_point(method: str, knob, train_rows, test_rows, *, c: int, steps: int, device: str = "cpu",
                   seed: int = 0) -> dict:
    """Fit `method` at `knob` on train_rows; R2 and L0 on test_rows (and R2 on train_rows)."""
    d = train_rows.shape[1]
    torch.manual_seed(seed)
    estimator = make_method(method, knob, c=c, d=d, device=device, seed=seed)
    if method in SAE_METHODS:
        train_sae(estimator, train_rows, steps=steps, batch_size=min(1024, len(train_rows)), seed=seed,
                  device=device, progress=False)
        estimator = estimator.cpu()

        def reconstruct(rows):
            codes = encode_codes(estimator, rows, device=device)
            with torch.no_grad():
                return codes, estimator.to(device).decode(codes.to_dense().to(device)).float().cpu()
    else:
        estimator.fit(train_rows)

        def reconstruct(rows):
            codes = estimator.encode(rows)
            return codes, estimator.decode(codes)
    test_codes, test_hat = reconstruct(test_rows)
    _, train_hat = reconstruct(train_rows)
    return {"method": method, "knob": knob, "l0": metrics.l0(test_codes), "r2": metrics.r2(test_rows, test_hat),
            "r2_train": metrics.r2(train_rows, train_hat)}


def sweep_plan(methods, ks, sparsities, d: int) -> list[tuple[str, object]]:
    """(method, knob) pairs of the sweep: k-like knobs over `ks` (PCA and OMP: k <= d), JumpReLU
    over `sparsities`, K-Means once."""
    plan = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use some of {METHODS}")
        if method == "jumprelu":
            plan += [(method, float(s)) for s in sparsities]
        elif method == "kmeans":
            plan.append((method, None))
        else:
            plan += [(method, int(k)) for k in ks if method not in ("pca", "sparse_coding") or k <= d]
    return plan


def pareto_front(l0, r2) -> np.ndarray:
    """Boolean mask of the non-dominated points (lower L0 and higher R2 are better)."""
    l0, r2 = np.asarray(l0, dtype=np.float64), np.asarray(r2, dtype=np.float64)
    on_front = np.ones(len(l0), dtype=bool)
    for i in range(len(l0)):
        dominated_by = (l0 <= l0[i]) & (r2 >= r2[i]) & ((l0 < l0[i]) | (r2 > r2[i]))
        on_front[i] = not dominated_by.any()
    return on_front


def front_gap(points: list[dict], method: str) -> float:
    """How far `method` is from the front of the OTHER methods, in R2: the mean over its points of
    (its R2 - the best R2 any other method reaches at an L0 no larger), positive when it is ahead.
    Points where no other method reaches that low an L0 are left out; NaN if none is left."""
    own = [p for p in points if p["method"] == method]
    others = [p for p in points if p["method"] != method]
    gaps = []
    for p in own:
        rivals = [q["r2"] for q in others if q["l0"] <= p["l0"] * (1 + 1e-9)]
        if rivals:
            gaps.append(p["r2"] - max(rivals))
    return float(np.mean(gaps)) if gaps else float("nan")


def pareto_sweep(train_rows, test_rows, *, c: int, steps: int, methods=METHODS, ks=None,
                 sparsities=DEFAULT_JUMPRELU_SPARSITIES, device: str = "cpu", seed: int = 0,
                 point_key: dict | None = None) -> dict:
    """All points of the sweep, with the front mask. With `point_key` (cache-key parts naming the
    data), each point is cached, so an interrupted sweep resumes where it stopped."""
    d = train_rows.shape[1]
    ks = default_ks(c, d) if ks is None else [int(k) for k in ks]
    points = []
    for method, knob in tqdm(sweep_plan(methods, ks, sparsities, d), desc="pareto points", leave=False):
        def compute(method=method, knob=knob):
            return evaluate_point(method, knob, train_rows, test_rows, c=c, steps=steps, device=device, seed=seed)

        if point_key is None:
            points.append(compute())
        else:
            parts = {**point_key, "method": method, "knob": knob, "c": c, "steps": steps, "seed": seed}
            points.append(cache.get_or_compute("pareto-point", parts, compute, kind="json"))
    front = pareto_front([p["l0"] for p in points], [p["r2"] for p in points])
    for p, on in zip(points, front):
        p["on_front"] = bool(on)
    return {"c": c, "ks": ks, "sparsities": list(sparsities), "points": points}


def pareto(emb, *, c: int, steps: int, n_train: int = 10_000, n_test: int = 4_000, methods=METHODS, ks=None,
           sparsities=DEFAULT_JUMPRELU_SPARSITIES, device: str = "cpu", seed: int = 0) -> dict:
    """Figure 1's sweep on `emb`, cached as one result per (embeddings, sizes, methods)."""
    n_train = min(n_train, len(emb.all) - min(n_test, len(emb.all) // 5))
    n_test = min(n_test, len(emb.all) - n_train)
    key = {**embedding_key(emb), "n_train": n_train, "n_test": n_test, "split_seed": seed}
    parts = {**key, "c": c, "steps": steps, "methods": list(methods), "ks": None if ks is None else list(ks),
             "sparsities": list(sparsities), "seed": seed}

    def compute():
        train_rows, test_rows = split_rows(emb, n_train=n_train, n_test=n_test, seed=seed)
        result = pareto_sweep(train_rows, test_rows, c=c, steps=steps, methods=methods, ks=ks,
                              sparsities=sparsities, device=device, seed=seed, point_key=key)
        return {**result, "n_train": n_train, "n_test": n_test}

    return cache.get_or_compute("pareto", parts, compute, kind="json")


def claims(result: dict) -> dict:
    """Per method: points on the front; BatchTopK's R2 margin over the other methods at equal L0."""
    points = result["points"]
    out = {}
    for method in sorted({p["method"] for p in points}):
        mine = [p for p in points if p["method"] == method]
        out[f"front_points_{method}"] = sum(p["on_front"] for p in mine)
        out[f"points_{method}"] = len(mine)
    out["batchtopk_front_gap"] = front_gap(points, "batchtopk")
    out["sae_front_share"] = float(np.mean([p["method"] in SAE_METHODS for p in points if p["on_front"]]))
    return out


def pareto_figure(result: dict, *, title: str = "Sparsity-expressivity trade-off (held-out rows)"):
    """R2 against L0, one colour per method; points on the overall front drawn larger, outlined."""
    import plotly.graph_objects as go

    from .. import plots

    fig = go.Figure()
    for method in METHODS:
        mine = sorted((p for p in result["points"] if p["method"] == method), key=lambda p: p["l0"])
        if not mine:
            continue
        fig.add_trace(go.Scatter(
            x=[p["l0"] for p in mine], y=[p["r2"] for p in mine], mode="lines+markers", name=method,
            line=dict(color=plots.COLORS["methods"][method], dash="solid" if method in SAE_METHODS else "dot"),
            marker=dict(size=[12 if p["on_front"] else 7 for p in mine], line=dict(width=[2 if p["on_front"] else 0 for p in mine], color="black")),
            text=[f"{method} knob={p['knob']}" for p in mine], hovertemplate="%{text}<br>L0=%{x:.2f}<br>R2=%{y:.3f}"))
    fig.update_xaxes(type="log", title="L0 (non-zero codes per example)")
    fig.update_yaxes(title="R2 (per-dimension mean, held-out)")
    return plots.layout(fig, title, height=480)
