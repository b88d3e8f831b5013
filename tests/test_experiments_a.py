"""Figures 1, 3, 5, 6: experiment functions against plain numpy loops and planted truth."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmsae import metrics, pipeline
from vlmsae.experiments import DEFAULT_STEPS, QUICK_STEPS, record_claims
from vlmsae.experiments import modality, pareto, stability
from vlmsae.planted import two_modality_data


@pytest.fixture(scope="module")
def planted():
    return two_modality_data(n_images=1500, d=64, gap=2.0, noise=0.05, seed=0)


class PlantedEmbeddings:
    """The slice of the EmbeddingSet face the experiments use, over planted arrays."""

    def __init__(self, data):
        self.image, self.text = data.images.numpy(), data.texts.numpy()
        self.all = np.concatenate([self.image, self.text])
        self.n_image, self.n_text, self.dim = len(self.image), len(self.text), self.image.shape[1]
        digest = stability.embedding_key(self)["checksum"]  # hash of the arrays
        self.path = Path(f"planted-{digest[:12]}")
        self.manifest = {"checksums": {"embeddings.npy": digest}}


# ----------------------------------------------------------------------------- package
def test_step_constants_and_record_claims(tmp_path):
    assert (DEFAULT_STEPS, QUICK_STEPS) == (3000, 400)
    path = record_claims(tmp_path / "out", {"a": np.float32(0.25), "b": np.arange(3), "c": float("nan"), "d": {"e": np.int64(4)}})
    assert path == tmp_path / "out" / "claims.json"
    assert json.loads(path.read_text()) == {"a": 0.25, "b": [0, 1, 2], "c": None, "d": {"e": 4}}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["claims.json"]  # no temp file left
    with pytest.raises(ValueError, match="dict"):
        record_claims(tmp_path, [1, 2])
    with pytest.raises(ValueError, match="JSON"):
        record_claims(tmp_path, {"x": object()})


# ----------------------------------------------------------------------------- figure 3
def test_energy_summary_on_planted_codes(planted):
    codes = torch.cat([planted.image_codes, planted.text_codes]).numpy().astype(np.float64)
    energy = codes.mean(axis=0)
    summary = stability.energy_summary(energy)
    ordered = sorted(energy, reverse=True)
    for fraction in (0.9, 0.99):
        running, count = 0.0, 0
        while running < fraction * sum(ordered) - 1e-12:
            running += ordered[count]
            count += 1
        assert summary[f"concepts_{fraction:g}"] == count
    assert summary["share"][-1] == pytest.approx(1.0)
    assert summary["share"][0] == pytest.approx(max(energy) / energy.sum())


def test_stability_of_identical_permuted_and_partly_shared_dictionaries():
    rng = np.random.default_rng(0)
    D = rng.normal(size=(12, 16))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    permuted = D[rng.permutation(12)]
    matrix = stability.stability_matrix([D, permuted, D])
    assert np.allclose(matrix, 1.0)
    # Planted: the 4 most energetic concepts are shared, the other 8 are fresh random directions.
    other = np.concatenate([D[:4], rng.normal(size=(8, 16))])
    other[4:] /= np.linalg.norm(other[4:], axis=1, keepdims=True)
    energy = np.r_[np.full(4, 10.0), np.ones(8)]
    top = stability.stability_matrix([D, other], [energy, energy], top=4)
    assert top[0, 1] == pytest.approx(1.0)
    all_concepts = stability.stability_matrix([D, other])[0, 1]
    # Brute force over permutations of the 8 fresh rows (the shared 4 match themselves).
    cos = D[4:] @ other[4:].T
    best = max(sum(cos[i, p[i]] for i in range(8)) for p in itertools.permutations(range(8)))
    assert all_concepts == pytest.approx((4 + best) / 12, abs=1e-9)
    assert all_concepts < 0.9
    curve = stability.stability_by_top([D, other], [energy, energy], [1, 4, 12])
    assert curve[0] == pytest.approx(1.0) and curve[1] == pytest.approx(1.0) and curve[2] == pytest.approx(all_concepts)


def test_mean_off_diagonal_and_default_tops():
    m = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    assert stability.mean_off_diagonal(m) == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    with pytest.raises(ValueError, match="2 seeds"):
        stability.mean_off_diagonal(np.eye(1))
    assert stability.default_tops(64) == [1, 2, 4, 8, 16, 32, 64]
    assert 12 in stability.default_tops(96) and stability.default_tops(96)[-1] == 96


def test_gap_concept_finds_the_planted_offset_concept(planted):
    D = planted.dictionary.numpy().astype(np.float64)
    offset = planted.offset_direction.numpy().astype(np.float64)
    # Plant an offset concept at row 5: mostly the offset, a little of concept 0.
    D = D.copy()
    D[5] = 0.8 * offset + 0.6 * D[0]
    energy = np.ones(len(D))
    energy[5], energy[9] = 12.0, 3.0
    gap = stability.gap_concept(D, energy, direction=2.5 * offset)
    assert gap["index"] == 5
    assert gap["cosine"] == pytest.approx(0.8, abs=1e-6)
    assert gap["energy_rank"] == 0 and gap["energy_ratio"] == pytest.approx(4.0)
    assert gap["energy_share"] == pytest.approx(12.0 / energy.sum())
    rest = stability.without({"dictionary": D, "energy": energy}, 5)
    assert rest["dictionary"].shape == (len(D) - 1, D.shape[1]) and rest["energy"].max() == 3.0
    with pytest.raises(ValueError, match="zero"):
        stability.gap_concept(D, energy, np.zeros(D.shape[1]))


def test_modality_direction_is_the_mean_difference(planted):
    emb = PlantedEmbeddings(planted)
    g = stability.modality_direction(emb)
    expected = np.array([sum(row[j] for row in emb.image.astype(np.float64)) / emb.n_image
                         - sum(row[j] for row in emb.text.astype(np.float64)) / emb.n_text for j in range(emb.dim)])
    assert np.allclose(g, expected)
    # Planted truth: concepts are orthogonal to the offset o, so g . o is the mean offset
    # difference (up to the small noise).
    planted_gap = float(planted.image_offset.mean() - planted.text_offset.mean())
    assert g @ planted.offset_direction.numpy() == pytest.approx(planted_gap, abs=0.02)


# ----------------------------------------------------------------------------- figure 5
def test_histogram_matches_a_loop():
    values = np.array([0.05, 0.5, 0.95, 1.0, np.nan, 0.5])
    weights = np.array([1.0, 2.0, 3.0, 4.0, 100.0, 0.0])
    bins = np.linspace(0, 1, 5)
    counts = modality.histogram(values, bins, weights, normalise=False)
    expected = np.zeros(4)
    for v, w in zip(values, weights):
        if math.isnan(v):
            continue
        expected[min(int(v / 0.25), 3)] += w
    assert np.allclose(counts, expected)
    assert modality.histogram(values, bins, weights).sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one weight per value"):
        modality.histogram(values, bins, weights[:2])


def test_unimodal_energy_fraction_on_planted_concepts(planted):
    scores = metrics.modality_score(planted.image_codes, planted.text_codes)
    n_img, n_txt = len(planted.image_codes), len(planted.text_codes)
    energy = (planted.image_codes.sum(0) + planted.text_codes.sum(0)).numpy() / (n_img + n_txt)
    # Planted truth: modality-specific concepts score exactly 0 or 1, shared ones in between.
    specific = planted.modality != "shared"
    assert np.all((scores[specific] == 0) | (scores[specific] == 1))
    assert np.all((scores[~specific] > 0.1) & (scores[~specific] < 0.9))
    expected = energy[specific].sum() / energy.sum()
    assert modality.unimodal_energy_fraction(scores, energy) == pytest.approx(expected)
    assert modality.unimodal_fraction(scores) == pytest.approx(specific.mean())
    with pytest.raises(ValueError, match="low < high"):
        modality.unimodal_energy_fraction(scores, energy, low=0.9, high=0.1)


def test_classifier_accuracy_of_planted_directions(planted):
    image, text = planted.images.numpy(), planted.texts.numpy()
    offset = planted.offset_direction.numpy()
    assert modality.direction_accuracy(image, text, offset) > 0.99
    concepts = [{"dictionary": planted.dictionary.numpy(), "energy": np.ones(len(planted.dictionary)),
                 "modality_score": np.full(len(planted.dictionary), 0.5)}]
    result = modality.classifier_analysis(concepts, image, text, offset)
    accuracy = np.array(result["seeds"][0]["all"]["accuracy"])
    shared = planted.modality == "shared"
    # Shared concepts are orthogonal to the offset and to every modality-specific concept:
    # their projections have one distribution for both modalities (chance, up to sampling).
    assert accuracy[shared].mean() < 0.6
    assert accuracy[~shared].mean() > accuracy[shared].mean() + 0.1
    assert result["direction_accuracy"] == pytest.approx(modality.direction_accuracy(image, text, offset))


# ----------------------------------------------------------------------------- figure 1
def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(1)
    l0, r2 = rng.integers(1, 10, size=30).astype(float), rng.random(30)
    front = pareto.pareto_front(l0, r2)
    for i in range(30):
        dominated = any(l0[j] <= l0[i] and r2[j] >= r2[i] and (l0[j], r2[j]) != (l0[i], r2[i]) for j in range(30))
        assert front[i] == (not dominated)
    points = [{"method": "a", "l0": 2, "r2": 0.8}, {"method": "b", "l0": 1, "r2": 0.5}, {"method": "b", "l0": 2, "r2": 0.6},
              {"method": "a", "l0": 0.5, "r2": 0.3}]
    assert pareto.front_gap(points, "a") == pytest.approx(0.8 - 0.6)  # the l0=0.5 point has no rival


def test_sweep_plan_and_baseline_points(planted):
    plan = pareto.sweep_plan(["pca", "kmeans", "jumprelu", "sparse_coding"], [2, 8, 128], [1e-3, 1e-2], d=64)
    assert plan == [("pca", 2), ("pca", 8), ("kmeans", None), ("jumprelu", 1e-3), ("jumprelu", 1e-2),
                    ("sparse_coding", 2), ("sparse_coding", 8)]
    with pytest.raises(ValueError, match="unknown method"):
        pareto.sweep_plan(["ica"], [1], [], d=8)
    rows = np.concatenate([planted.images.numpy(), planted.texts.numpy()])
    train, test = rows[:2000], rows[2000:2600]
    full = pareto.evaluate_point("pca", 64, train, test, c=16, steps=1)
    assert full["l0"] == pytest.approx(64) and full["r2"] == pytest.approx(1.0, abs=1e-4)
    few = pareto.evaluate_point("pca", 4, train, test, c=16, steps=1)
    # Independent PCA: numpy SVD of the centred training rows, scored on the test rows.
    mean = train.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    hat = (test - mean) @ vt[:4].T @ vt[:4] + mean
    expected = 1 - ((test - hat) ** 2).sum() / ((test - test.mean(0)) ** 2).sum()
    assert few["r2"] == pytest.approx(expected, abs=1e-4)
    assert pareto.evaluate_point("kmeans", None, train, test, c=16, steps=1)["l0"] == pytest.approx(1.0)


def test_split_rows_is_disjoint_and_checked(planted):
    emb = PlantedEmbeddings(planted)
    train, test = pareto.split_rows(emb, n_train=1000, n_test=200, seed=3)
    assert train.shape == (1000, 64) and test.shape == (200, 64)
    assert not ({r.tobytes() for r in train} & {r.tobytes() for r in test})
    with pytest.raises(ValueError, match="exceeds"):
        pareto.split_rows(emb, n_train=len(emb.all), n_test=1)


# ----------------------------------------------------------------------------- end to end
def test_seed_experiments_end_to_end_on_planted_data(planted, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSAE_CACHE", str(tmp_path / "cache"))
    emb = PlantedEmbeddings(planted)
    sizes = {"c": 32, "k": 4, "seeds": 2, "steps": 50}  # tiny: the numbers are checked, not the SAE quality
    result = stability.energy_stability(emb, **sizes)
    again = stability.energy_stability(emb, **sizes)
    assert again == json.loads(json.dumps(result))  # cached: the same numbers back
    # Energies of seed 0 against a direct dense computation with the same cached SAE.
    sae = pipeline.train(emb, "batchtopk", c=32, k=4, seed=0, steps=50)
    concepts = stability.seed_concepts(emb, c=32, k=4, seed=0, steps=50)
    with torch.no_grad():
        z_img = sae.encode(torch.from_numpy(emb.image))[1].double().numpy()
        z_txt = sae.encode(torch.from_numpy(emb.text))[1].double().numpy()
    assert np.allclose(concepts["energy_image"], z_img.mean(0), atol=1e-6)
    assert np.allclose(concepts["energy"], np.concatenate([z_img, z_txt]).mean(0), atol=1e-6)
    matrix = np.array(result["all"]["matrix_all"])
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0)
    assert matrix[0, 1] == pytest.approx(metrics.stability(concepts["dictionary"],
                                                           stability.seed_concepts(emb, c=32, k=4, seed=1, steps=50)["dictionary"]))
    claims = stability.claims(result)
    assert all(np.isfinite(v) for v in claims.values())
    assert claims["concepts_90"] <= claims["concepts_99"] <= 32
    scores = modality.modality_scores(emb, **sizes)
    direct = metrics.modality_score(z_img, z_txt)
    finite = np.isfinite(direct)
    got = np.array([np.nan if s is None else s for s in scores["seeds"][0]["all"]["scores"]])
    assert np.allclose(got[finite], direct[finite], atol=1e-6)
    assert 0 <= modality.score_claims(scores)["unimodal_energy_fraction"] <= 1
    accuracy = modality.modality_classifiers(emb, **sizes, max_rows=500)
    assert accuracy["direction_accuracy"] > 0.99
    assert len(accuracy["seeds"][0]["no_gap"]["accuracy"]) == 31
