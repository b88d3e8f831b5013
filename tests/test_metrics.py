"""Each metric against an independent plain-numpy computation written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vlmsae import metrics


def sparse_codes(rng, n, c, k, *, dead=()):
    """(n, c) non-negative codes with k non-zeros per row, never using the `dead` concepts."""
    alive = np.setdiff1d(np.arange(c), dead)
    Z = np.zeros((n, c))
    for r in range(n):
        Z[r, rng.choice(alive, size=k, replace=False)] = rng.uniform(0.1, 2.0, size=k)
    return Z


def batches(x, sizes):
    out, start = [], 0
    for size in sizes:
        out.append(x[start : start + size])
        start += size
    assert start == len(x)
    return out


# ----------------------------------------------------------------------------- r2
def loop_r2(A, A_hat, mean):
    n, d = A.shape
    residual = sum((A[r, j] - A_hat[r, j]) ** 2 for r in range(n) for j in range(d))
    if mean == "per_dim":
        centre = [sum(A[r, j] for r in range(n)) / n for j in range(d)]
        total = sum((A[r, j] - centre[j]) ** 2 for r in range(n) for j in range(d))
    else:
        g = sum(A[r, j] for r in range(n) for j in range(d)) / (n * d)
        total = sum((A[r, j] - g) ** 2 for r in range(n) for j in range(d))
    return 1 - residual / total


@pytest.mark.parametrize("mean", ["per_dim", "global"])
def test_r2_matches_loop_and_streams(mean):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 5)) + rng.normal(size=5) * 3
    A_hat = A + rng.normal(scale=0.5, size=A.shape)
    expected = loop_r2(A, A_hat, mean)
    assert metrics.r2(A, A_hat, mean=mean) == pytest.approx(expected, abs=1e-12)
    assert metrics.r2(torch.tensor(A, dtype=torch.float32), torch.tensor(A_hat, dtype=torch.float32), mean=mean) == pytest.approx(expected, abs=1e-5)
    stream = zip(batches(A, [7, 1, 20, 12]), batches(A_hat, [7, 1, 20, 12]))
    assert metrics.r2(stream, mean=mean) == pytest.approx(expected, abs=1e-12)
    assert metrics.r2(A, A_hat, mean=mean, batch_rows=3) == pytest.approx(expected, abs=1e-12)


def test_global_mean_inflates_r2_on_offset_data():
    """Reconstruction = the column means: per-dim R2 is 0, the scalar-mean variant says 0.9."""
    rng = np.random.default_rng(1)
    n, d = 200, 8
    noise = rng.normal(size=(n, d))
    noise -= noise.mean(axis=0)  # exact column means zero
    offsets = rng.normal(size=d)
    offsets -= offsets.mean()
    # spread of column means (times n) = 9 x the within-column sum of squares
    offsets *= np.sqrt(9 * (noise**2).sum() / (n * (offsets**2).sum()))
    A = noise + offsets + 0.37  # plus a common shift, which neither variant counts
    A_hat = np.broadcast_to(A.mean(axis=0), A.shape)
    assert metrics.r2(A, A_hat) == pytest.approx(0.0, abs=1e-12)
    assert metrics.r2(A, A_hat, mean="global") == pytest.approx(0.9, abs=1e-12)


def test_r2_rejects_bad_input():
    A = np.ones((4, 3))
    with pytest.raises(ValueError, match="mean must be"):
        metrics.r2(A, A, mean="median")
    with pytest.raises(ValueError, match="rows"):
        metrics.r2(A, A[:3])
    with pytest.raises(ValueError, match="constant"):
        metrics.r2(A, A)
    bad = np.random.default_rng(0).normal(size=(4, 3))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.r2(bad, np.zeros((4, 3)))


# ----------------------------------------------------------------------------- code statistics
def test_l0_dead_energy_match_loops_dense_sparse_and_streamed():
    rng = np.random.default_rng(2)
    n, c = 30, 12
    Z = sparse_codes(rng, n, c, 3, dead=(4, 9))
    Z[5, :] = 0  # a row with no code at all
    loop_l0 = sum(sum(1 for i in range(c) if Z[r, i] != 0) for r in range(n)) / n
    loop_dead = sum(1 for i in range(c) if all(Z[r, i] == 0 for r in range(n))) / c
    loop_energy = np.array([sum(Z[r, i] for r in range(n)) / n for i in range(c)])
    sparse = torch.tensor(Z).to_sparse_csr()
    for codes in (Z, torch.tensor(Z), sparse, batches(Z, [10, 10, 10])):
        assert metrics.l0(codes) == pytest.approx(loop_l0)
        assert metrics.dead_fraction(codes) == pytest.approx(loop_dead)
        np.testing.assert_allclose(metrics.energy(codes), loop_energy, rtol=1e-12)
    np.testing.assert_allclose(metrics.energy(Z, batch_rows=7), loop_energy, rtol=1e-12)


def test_energy_share_and_concepts_for_energy():
    energies = np.array([0.5, 4.0, 0.0, 1.5, 3.0, 1.0])
    ordered = sorted(energies, reverse=True)
    expected = [sum(ordered[: m + 1]) / sum(ordered) for m in range(len(ordered))]
    np.testing.assert_allclose(metrics.energy_share(energies), expected)
    # 4 + 3 = 7 of 10 (70%), + 1.5 = 85%, + 1 = 95%
    assert metrics.concepts_for_energy(energies, 0.7) == 2
    assert metrics.concepts_for_energy(energies, 0.9) == 4
    assert metrics.concepts_for_energy(energies, 1.0) == 5
    Z = np.tile(energies, (3, 1))
    np.testing.assert_allclose(metrics.energy_share(Z), expected)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.energy_share(-energies)


# ----------------------------------------------------------------------------- stability
def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_stability_of_a_permuted_rescaled_dictionary_is_one():
    rng = np.random.default_rng(3)
    D = rng.normal(size=(50, 16))
    permuted = D[rng.permutation(50)] * rng.uniform(0.5, 3, size=(50, 1))  # rows get normalised
    assert metrics.stability(D, permuted) == pytest.approx(1.0, abs=1e-12)


def test_stability_equals_brute_force_over_permutations():
    rng = np.random.default_rng(4)
    D1, D2 = unit(rng.normal(size=(6, 4))), unit(rng.normal(size=(6, 4)))
    best = max(np.mean([D1[r] @ D2[p[r]] for r in range(6)]) for p in itertools.permutations(range(6)))
    assert metrics.stability(D1, D2) == pytest.approx(best, abs=1e-12)


def test_stability_of_random_dictionaries_sits_at_chance():
    """Between a greedy matching (a lower bound, computed here) and the row-wise maxima (an upper one)."""
    rng = np.random.default_rng(5)
    c, d = 120, 64
    D1, D2 = unit(rng.normal(size=(c, d))), unit(rng.normal(size=(c, d)))
    S = D1 @ D2.T
    remaining = S.copy()
    greedy = []
    for _ in range(c):
        r, col = np.unravel_index(np.argmax(remaining), remaining.shape)
        greedy.append(S[r, col])
        remaining[r, :] = -np.inf
        remaining[:, col] = -np.inf
    value = metrics.stability(D1, D2)
    assert np.mean(greedy) - 1e-12 <= value <= min(S.max(axis=1).mean(), S.max(axis=0).mean()) + 1e-12
    # chance: about the expected best of c cosines ~ N(0, 1/d), far from a shared dictionary
    assert 0.1 < value < 0.4


def test_stability_top_restricts_each_dictionary_to_its_own_high_energy_rows():
    rng = np.random.default_rng(6)
    d, core, c = 32, 10, 60
    shared = unit(rng.normal(size=(core, d)))
    D1 = np.vstack([shared, unit(rng.normal(size=(c - core, d)))])
    order2 = rng.permutation(c)
    D2 = np.vstack([shared[::-1], unit(rng.normal(size=(c - core, d)))])[order2]
    energy1 = np.concatenate([rng.uniform(5, 10, core), rng.uniform(0, 1, c - core)])
    energy2 = np.concatenate([rng.uniform(5, 10, core), rng.uniform(0, 1, c - core)])[order2]
    assert metrics.stability(D1, D2, top=core, energy1=energy1, energy2=energy2) == pytest.approx(1.0, abs=1e-12)
    assert metrics.stability(D1, D2) < 0.6
    top = 25
    keep1, keep2 = np.argsort(-energy1)[:top], np.argsort(-energy2)[:top]
    assert metrics.stability(D1, D2, top=top, energy1=energy1, energy2=energy2) == pytest.approx(
        metrics.stability(D1[keep1], D2[keep2]), abs=1e-12
    )
    with pytest.raises(ValueError, match="energy1 and energy2"):
        metrics.stability(D1, D2, top=5)
    with pytest.raises(ValueError, match="columns"):
        metrics.stability(D1, D2[:, :5])


# ----------------------------------------------------------------------------- modality score
def test_modality_score_matches_loop_with_nan_for_silent_concepts():
    rng = np.random.default_rng(7)
    c = 10
    Z_img = sparse_codes(rng, 12, c, 2, dead=(0, 1, 2))
    Z_txt = sparse_codes(rng, 30, c, 3, dead=(0, 3))  # 5 captions per image-ish: different counts
    expected = []
    for i in range(c):
        mean_img = sum(Z_img[r, i] for r in range(12)) / 12
        mean_txt = sum(Z_txt[r, i] for r in range(30)) / 30
        expected.append(np.nan if mean_img + mean_txt == 0 else mean_img / (mean_img + mean_txt))
    scores = metrics.modality_score(Z_img, Z_txt)
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert np.isnan(scores[0]) and scores[1] == 0.0 and scores[3] == 1.0
    streamed = metrics.modality_score(zip(batches(Z_img, [5, 7]), batches(Z_txt, [20, 10])))
    np.testing.assert_allclose(streamed, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        metrics.modality_score(-Z_img, Z_txt)
    with pytest.raises(ValueError, match="Z_txt is missing"):
        metrics.modality_score(Z_img)


# ----------------------------------------------------------------------------- classifier
def loop_classifier_accuracy(A_img, A_txt, direction, balanced):
    p_img, p_txt = A_img @ direction, A_txt @ direction
    values = np.sort(np.concatenate([p_img, p_txt]))
    cuts = [-np.inf] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:]) if b > a] + [np.inf]
    best = 0.0
    for t in cuts:
        recall_img_above = np.mean(p_img > t)
        recall_txt_below = np.mean(p_txt <= t)
        if balanced:
            acc = (recall_img_above + recall_txt_below) / 2
        else:
            acc = (np.sum(p_img > t) + np.sum(p_txt <= t)) / (len(p_img) + len(p_txt))
        best = max(best, acc, 1 - acc)
    return best


@pytest.mark.parametrize("balanced", [True, False])
def test_classifier_accuracy_matches_threshold_loop(balanced):
    rng = np.random.default_rng(8)
    d = 6
    A_img = rng.normal(size=(25, d)) + np.array([1.0, 0, 0, 0, 0, 0])
    A_txt = rng.normal(size=(40, d))
    A_txt[:5] = A_img[:5]  # exact ties between the modalities
    D = rng.normal(size=(9, d))
    D[0] = [1, 0, 0, 0, 0, 0]
    D[1] = 0  # a zero direction: one tie group, no threshold separates anything
    D[2] = [0, 0, 0, 0, 0, 3]
    A_img[:, 5] = np.round(A_img[:, 5])  # many ties within the modality on D[2]
    A_txt[:, 5] = np.round(A_txt[:, 5])
    expected = [loop_classifier_accuracy(A_img, A_txt, D[i], balanced) for i in range(len(D))]
    got = metrics.modality_classifier_accuracy(A_img, A_txt, D, balanced=balanced)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got[1] == pytest.approx(0.5 if balanced else 40 / 65)


def test_classifier_accuracy_one_for_a_separating_direction_and_blocks_agree(monkeypatch):
    rng = np.random.default_rng(9)
    A_img = rng.normal(size=(50, 4)) + [5, 0, 0, 0]
    A_txt = rng.normal(size=(70, 4)) - [5, 0, 0, 0]
    D = np.vstack([[1, 0, 0, 0], [-1, 0, 0, 0], rng.normal(size=(6, 4))])
    whole = metrics.modality_classifier_accuracy(A_img, A_txt, D)
    assert whole[0] == 1.0 and whole[1] == 1.0  # either orientation
    monkeypatch.setattr(metrics, "SORT_BLOCK_ELEMENTS", 120 * 3)  # 3 concepts per sort
    np.testing.assert_array_equal(metrics.modality_classifier_accuracy(A_img, A_txt, D), whole)
    with pytest.raises(ValueError, match="width"):
        metrics.modality_classifier_accuracy(A_img, A_txt, D[:, :3])


# ----------------------------------------------------------------------------- bridge
def loop_bridge(Z_img, Z_txt, D):
    n, c = Z_img.shape
    B = np.zeros((c, c))
    for i in range(c):
        for j in range(c):
            co = sum(Z_img[r, i] * Z_txt[r, j] for r in range(n)) / n
            B[i, j] = co * sum(D[i, t] * D[j, t] for t in range(D.shape[1]))
    return B


def test_sparse_bridge_equals_dense_formula_in_every_input_form():
    rng = np.random.default_rng(10)
    n, c, d = 40, 14, 5
    Z_img, Z_txt = sparse_codes(rng, n, c, 3), sparse_codes(rng, n, c, 4)
    D = rng.normal(size=(c, d))
    expected = loop_bridge(Z_img, Z_txt, D)
    np.testing.assert_allclose(metrics.bridge_matrix(Z_img, Z_txt, D), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(metrics.bridge_matrix(Z_img, Z_txt, D, batch_rows=9), expected, rtol=1e-10, atol=1e-14)
    sparse = metrics.bridge_matrix(torch.tensor(Z_img).to_sparse_coo(), torch.tensor(Z_txt).to_sparse_csr(), torch.tensor(D))
    np.testing.assert_allclose(sparse, expected, rtol=1e-10, atol=1e-14)
    stream = zip(batches(Z_img, [11, 29]), batches(Z_txt, [11, 29]))
    np.testing.assert_allclose(metrics.bridge_matrix(stream, D=D), expected, rtol=1e-10, atol=1e-14)
    as_float32 = metrics.bridge_matrix(torch.tensor(Z_img, dtype=torch.float32), torch.tensor(Z_txt, dtype=torch.float32), D)
    np.testing.assert_allclose(as_float32, expected, rtol=1e-5, atol=1e-7)


def test_top_bridges_match_a_sort_and_skip_the_diagonal():
    rng = np.random.default_rng(11)
    B = rng.normal(size=(7, 7))
    B[3, 3] = 100.0
    entries = sorted(((B[i, j], i, j) for i in range(7) for j in range(7) if i != j), reverse=True)[:5]
    assert metrics.top_bridges(B, 5) == [(i, j, pytest.approx(v)) for v, i, j in entries]
    assert metrics.top_bridges(B, 1, include_diagonal=True) == [(3, 3, 100.0)]


def test_bridge_rejects_bad_input():
    rng = np.random.default_rng(12)
    Z = sparse_codes(rng, 10, 6, 2)
    D = rng.normal(size=(6, 4))
    with pytest.raises(ValueError, match="row-aligned"):
        metrics.bridge_matrix(Z, Z[:9], D)
    with pytest.raises(ValueError, match="matched image-text pairs"):
        metrics.bridge_matrix([(Z, Z[:9])], D=D)
    with pytest.raises(ValueError, match="wrong dictionary"):
        metrics.bridge_matrix(Z, Z, D[:5])
    with pytest.raises(ValueError, match="columns"):
        metrics.bridge_matrix(Z, Z[:, :5], D)
    with pytest.raises(ValueError, match="needs the dictionary"):
        metrics.bridge_matrix(Z, Z)
    bad = Z.copy()
    bad[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.bridge_matrix(bad, Z, D)
    D_bad = D.copy()
    D_bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.bridge_matrix(Z, Z, D_bad)


def test_both_cross_products_equal_a_numpy_product():
    # the compiled CPU kernel (accumulating into its output, as over batches) and the torch
    # sparse path that other devices take, on codes with empty rows and never-firing concepts
    from vlmsae.cooccurrence import add_cooccurrence

    rng = np.random.default_rng(13)
    n, c = 90, 12
    Z_img, Z_txt = sparse_codes(rng, n, c, 3), sparse_codes(rng, n, c, 2)
    Z_img[5], Z_txt[7], Z_img[:, 4] = 0, 0, 0
    expected = Z_img.T @ Z_txt
    for dtype in (torch.float32, torch.float64):
        csr = [torch.tensor(Z, dtype=dtype).to_sparse_csr() for Z in (Z_img, Z_txt)]
        triples = [(z.crow_indices().numpy(), z.col_indices().numpy(), z.values().numpy()) for z in csr]
        out = np.zeros((c, c))
        add_cooccurrence(out, *triples, threads=1)
        add_cooccurrence(out, *triples, threads=3)  # three blocks of concepts, one per thread
        np.testing.assert_allclose(out, 2 * expected, rtol=1e-6 if dtype == torch.float32 else 1e-12)
        np.testing.assert_allclose(metrics._torch_cross_product(*csr).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="rows"):
        add_cooccurrence(np.zeros((c, c)), triples[0], (triples[1][0][:-1], *triples[1][1:]))


def test_bridge_leaves_torch_thread_count_alone():
    # numba's parallel (OpenMP) layer shares libgomp with torch and reset its thread count, which
    # made later torch work oversubscribe the cores: the kernel runs in plain Python threads
    rng = np.random.default_rng(14)
    Z = sparse_codes(rng, 50, 8, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics.bridge_matrix(Z, Z, np.eye(8))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
