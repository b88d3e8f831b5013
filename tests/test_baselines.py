"""Non-SAE dictionary methods: each checked against numpy or planted truth, and its sparsity knob."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmsae import metrics
from vlmsae.baselines import PCA, KMeans, SemiNMF, SparseCoding, omp
from vlmsae.synthetic import sparse_dictionary_data


@pytest.fixture(scope="module")
def data():
    return sparse_dictionary_data(n=512, d=32, c=64, k=4, noise=0.05, seed=0).data


def r2_of(method, A):
    return metrics.r2(A, method.decode(method.encode(A)))


def test_pca_r2_equals_explained_variance_and_rises(data):
    A = data.numpy().astype(np.float64)
    centred = A - A.mean(axis=0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1]
    scores = []
    for m in (2, 4, 8, 16):
        pca = PCA(m).fit(data)
        Z = pca.encode(data)
        assert metrics.l0(Z) == m
        assert torch.allclose(pca.dictionary @ pca.dictionary.T, torch.eye(m), atol=1e-5)
        scores.append(r2_of(pca, data))
        assert scores[-1] == pytest.approx(eigenvalues[:m].sum() / eigenvalues.sum(), abs=1e-4)
    assert np.all(np.diff(scores) > 0)


def test_kmeans_codes_are_one_projection_on_the_nearest_line(data):
    km = KMeans(16, n_iter=10).fit(data)
    Z, D, A = km.encode(data).numpy(), km.dictionary.numpy(), data.numpy()
    assert np.allclose(np.linalg.norm(D, axis=1), 1, atol=1e-5)
    assert ((Z != 0).sum(axis=1) == 1).all()
    for r in range(0, len(A), 50):
        projections = [A[r] @ D[j] for j in range(len(D))]
        best = max(range(len(D)), key=lambda j: abs(projections[j]))
        assert Z[r, best] == pytest.approx(projections[best], abs=1e-5)
    scores = [r2_of(KMeans(m, n_iter=10).fit(data), data) for m in (2, 8, 32)]
    assert np.all(np.diff(scores) > 0)


def test_semi_nmf_codes_are_non_negative_and_its_loss_never_rises(data):
    nmf = SemiNMF(16, n_iter=40, encode_iter=40).fit(data)
    assert (nmf.encode(data) >= 0).all()
    losses = np.array(nmf.loss_history)
    assert np.all(np.diff(losses) <= 1e-5 * losses[:-1])
    assert losses[-1] < 0.5 * losses[0]
    scores = [r2_of(SemiNMF(m, n_iter=40, encode_iter=40).fit(data), data) for m in (4, 16, 48)]
    assert np.all(np.diff(scores) > 0)
    sparse_scores = []
    for top_k in (1, 4, 16):
        nmf.top_k = top_k
        Z = nmf.encode(data)
        assert ((Z != 0).sum(dim=1) <= top_k).all() and (Z >= 0).all()
        sparse_scores.append(metrics.r2(data, nmf.decode(Z)))
    assert np.all(np.diff(sparse_scores) > 0)



def test_k_sparse_semi_nmf_is_fitted_for_sparse_codes():
    """On embeddings with a modality offset, a dense fit's codes cancel each other: cutting them to
    k afterwards scored R2 < 0. Fitting with the top-k inside the loop must do clearly better."""
    from vlmsae.planted import two_modality_data

    planted = two_modality_data()
    A = torch.cat([torch.as_tensor(planted.images), torch.as_tensor(planted.texts)]).float()[:2000]
    dense = SemiNMF(64, n_iter=40, encode_iter=40).fit(A)
    dense.top_k = 2
    sparse = SemiNMF(64, top_k=2, n_iter=40, encode_iter=40).fit(A)
    r2_dense, r2_sparse = r2_of(dense, A), r2_of(sparse, A)
    assert r2_sparse > 0.2 and r2_sparse > r2_dense + 0.3


def test_omp_refits_least_squares_on_its_support_and_recovers_planted_supports():
    truth = sparse_dictionary_data(n=200, d=64, c=96, k=3, seed=1)
    A, D = truth.data, truth.dictionary
    Z = omp(A, D, 3)
    assert ((Z != 0).sum(dim=1) == 3).all()
    recovered = ((Z != 0) == (truth.codes != 0)).all(dim=1).float().mean()
    assert recovered > 0.95
    A_np, D_np, Z_np = A.numpy().astype(np.float64), D.numpy().astype(np.float64), Z.numpy()
    for r in range(0, 200, 20):
        support = np.flatnonzero(Z_np[r])
        coefficients, *_ = np.linalg.lstsq(D_np[support].T, A_np[r], rcond=None)
        np.testing.assert_allclose(Z_np[r, support], coefficients, atol=1e-4)


def test_sparse_coding_has_exactly_k_codes_and_r2_rises_with_k(data):
    scores = []
    for k in (1, 2, 4, 8):
        sc = SparseCoding(64, k, n_iter=8).fit(data)
        Z = sc.encode(data)
        assert ((Z != 0).sum(dim=1) == k).all()
        assert torch.allclose(sc.dictionary.norm(dim=1), torch.ones(64), atol=1e-5)
        scores.append(r2_of(sc, data))
    assert np.all(np.diff(scores) > 0)
    assert scores[2] > 0.8  # k = the planted 4 atoms per example


def test_baselines_reject_bad_input(data):
    with pytest.raises(ValueError, match="not fitted"):
        PCA(2).encode(data)
    pca = PCA(4).fit(data)
    with pytest.raises(ValueError, match="columns"):
        pca.encode(data[:, :10])
    bad = data.clone()
    bad[3, 3] = float("nan")
    for method in (PCA(2), KMeans(4), SemiNMF(4, n_iter=2), SparseCoding(8, 2, n_iter=1)):
        with pytest.raises(ValueError, match="NaN"):
            method.fit(bad)
    with pytest.raises(ValueError, match="exceeds n_atoms"):
        SparseCoding(4, 5)
    with pytest.raises(ValueError, match="positive integer"):
        KMeans(0)
    with pytest.raises(ValueError, match="at least 1000 rows"):
        KMeans(1000).fit(data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_baselines_on_cuda_match_cpu(data):
    for make in (lambda device: PCA(8, device=device), lambda device: SparseCoding(64, 4, n_iter=3, device=device)):
        cpu, cuda = make("cpu").fit(data), make("cuda").fit(data)
        assert cuda.dictionary.device.type == "cuda"
        assert r2_of(cuda, data) == pytest.approx(r2_of(cpu, data), abs=1e-3)
