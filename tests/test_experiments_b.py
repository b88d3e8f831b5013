"""Figures 2, 4, 7 and the modality-gap ablation: experiment functions against numpy loops and
planted truth (`vlmsae.planted.two_modality_data`)."""

import numpy as np
import pytest
import torch

from vlmsae import metrics
from vlmsae.experiments import ablation, bridges, mixtures, projection
from vlmsae.planted import two_modality_data
from vlmsae.sae import BatchTopKSAE


@pytest.fixture(scope="module")
def world():
    return two_modality_data(n_images=1500, d=64, seed=0)


def dense_bridge(Z_img, Z_txt, D):
    Z_img, Z_txt, D = (np.asarray(x, dtype=np.float64) for x in (Z_img, Z_txt, D))
    B = np.zeros((Z_img.shape[1], Z_img.shape[1]))
    for r in range(len(Z_img)):
        B += np.outer(Z_img[r], Z_txt[r])
    return B / len(Z_img) * (D @ D.T)


def top_sum(B, n):
    values = np.asarray(B, dtype=np.float64).copy()
    np.fill_diagonal(values, -np.inf)
    return np.sort(values.ravel())[::-1][:n].sum()


# ----------------------------------------------------------------------------- bridges
def test_bridge_analysis_matches_numpy_and_shuffle(world):
    Z_img, Z_txt, D = world.paired_image_codes(), world.text_codes, world.dictionary
    result = bridges.bridge_analysis(Z_img.to_sparse_csr(), Z_txt.to_sparse_csr(), D, n_top=8, shuffles=2, seed=5)
    B = dense_bridge(Z_img, Z_txt, D)
    np.testing.assert_allclose(result.B, B, rtol=1e-5, atol=1e-9)
    assert result.mass == pytest.approx(top_sum(B, 8), rel=1e-6)
    expected = [top_sum(dense_bridge(Z_img, Z_txt.numpy()[np.random.default_rng(5 + s).permutation(len(Z_txt))], D), 8)
                for s in range(2)]
    np.testing.assert_allclose(result.shuffled_masses, expected, rtol=1e-5)
    # planted truth: most top bridges are planted pairs, and planted pairs collapse under shuffling
    planted = {tuple(p) for p in world.bridges.tolist()}
    assert sum((i, j) in planted for i, j, _ in result.top) >= 5
    assert result.shuffled_ratio < 0.8
    shuffled = dense_bridge(Z_img, Z_txt.numpy()[np.random.default_rng(5).permutation(len(Z_txt))], D)
    real_planted = sum(B[i, j] for i, j in planted)
    assert sum(shuffled[i, j] for i, j in planted) / real_planted < 0.3
    # the table splits B into co-activation and cosine
    score = np.arange(D.shape[0]) / D.shape[0]
    rows = bridges.bridge_table(result, D, score)
    coactivation = Z_img.numpy().T.astype(np.float64) @ Z_txt.numpy() / len(Z_txt)
    for row in rows:
        i, j = row["image concept"], row["text concept"]
        assert row["cosine"] == pytest.approx(float(D[i] @ D[j]), abs=1e-6)
        assert row["co-activation"] == pytest.approx(coactivation[i, j], rel=1e-4)
        assert row["score of j"] == score[j]
    assert bridges.claims(result, rows)["top_bridge"] == list(result.top[0][:2])
    # leaving a concept out: no top bridge touches it, the mass is that of B without its row and column
    left_out = result.top[0][0]
    without = bridges.bridge_analysis(Z_img, Z_txt, D, n_top=8, shuffles=1, seed=5, exclude=[left_out])
    assert all(left_out not in (i, j) for i, j, _ in without.top)
    kept = np.delete(np.delete(B, left_out, axis=0), left_out, axis=1)
    assert without.mass == pytest.approx(top_sum(kept, 8), rel=1e-6)


def test_sparse_helpers_and_examples():
    rng = np.random.default_rng(0)
    dense = rng.random((30, 6)) * (rng.random((30, 6)) < 0.3)
    csr = torch.from_numpy(dense).float().to_sparse_csr()
    permutation = rng.permutation(30)
    np.testing.assert_allclose(bridges.permute_rows(csr, permutation).to_dense().numpy(), dense[permutation], rtol=1e-6)
    with pytest.raises(ValueError, match="exactly once"):
        bridges.permute_rows(csr, np.zeros(30, dtype=int))
    rows, values = bridges.top_rows(csr, 2, n=4)
    order = [r for r in np.argsort(-dense[:, 2], kind="stable") if dense[r, 2] > 0][:4]
    assert rows.tolist() == order
    np.testing.assert_allclose(values, dense[order, 2], rtol=1e-6)
    # two captions for images 0 and 2, none for image 1
    pairs = np.array([[0, 0], [2, 1], [0, 2], [2, 3]])
    assert bridges.first_caption_rows(pairs, 3).tolist() == [0, -1, 1]
    image_codes = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 2.0]]).to_sparse_csr()
    text_codes = torch.tensor([[1.0, 0.0], [0.5, 0.0], [2.0, 0.0], [0.0, 0.0]]).to_sparse_csr()
    examples = bridges.concept_examples(image_codes, text_codes, ["a", "b", "c", "d"], pairs, [1], [0], n=2)
    assert examples["image"][1]["rows"] == [1, 2] and examples["image"][1]["captions"] == ["", "b"]
    assert examples["text"][0]["captions"] == ["c", "a"]
    fig = bridges.bridge_graph_figure([(1, 0, 2.0), (1, 3, 1.0)], examples)
    widths = [trace.line.width for trace in fig.data if trace.mode == "lines"]
    assert widths[0] > widths[1]


# ----------------------------------------------------------------------------- mixtures
def test_shared_top_concepts_planted():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 24))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    dictionaries, energies = [], []
    for m in range(3):
        # rows 0..5 of base are every mixture's most energetic concepts; two more top concepts are
        # the mixture's own random directions; the rest is shared low-energy filler, shuffled
        own = rng.normal(size=(2, 24))
        D = np.concatenate([base[:6], own / np.linalg.norm(own, axis=1, keepdims=True), base[8:]])
        energy = np.concatenate([np.full(6, 10.0) + rng.random(6), np.full(2, 9.0), rng.random(32)])
        order = rng.permutation(len(D))
        dictionaries.append(D[order])
        energies.append(energy[order])
    result = mixtures.shared_top_concepts(dictionaries, energies, top=8, threshold=0.9)
    off = result["shared_counts"][~np.eye(3, dtype=bool)]
    assert (off == 6).all() and (np.diag(result["shared_counts"]) == 8).all()
    assert result["core"] == 6
    core_rows = dictionaries[1][result["core_concepts"]]
    assert np.allclose(np.sort(np.abs(core_rows @ base[:6].T).max(axis=1)), 1.0)
    assert result["stability_top"][0, 1] == pytest.approx(
        metrics.stability(dictionaries[0], dictionaries[1], top=8, energy1=energies[0], energy2=energies[1]))
    with pytest.raises(ValueError, match="at least 2"):
        mixtures.shared_top_concepts(dictionaries[:1], energies[:1], top=8)


def test_joint_layout_splits_one_layout():
    from vlmsae.explore_layout import concept_layout

    rng = np.random.default_rng(2)
    dictionaries = [rng.normal(size=(n, 8)).astype(np.float32) for n in (5, 7, 3)]
    parts = mixtures.joint_layout(dictionaries, method="pca")
    whole = concept_layout(np.concatenate(dictionaries), method="pca")
    assert [len(p) for p in parts] == [5, 7, 3]
    np.testing.assert_allclose(np.concatenate(parts), whole)


# ----------------------------------------------------------------------------- projection
def planted_sae(world, threshold: float) -> BatchTopKSAE:
    """A BatchTopK SAE whose encoder and decoder are the planted dictionary (no biases)."""
    D = world.dictionary
    sae = BatchTopKSAE(D.shape[1], D.shape[0], 4)
    with torch.no_grad():
        sae.W_dec.copy_(D)
        sae.W_enc.copy_(D)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold_sum.fill_(threshold)
        sae.threshold_weight.fill_(1.0)
    return sae


def brute_force_accuracy(p_img, p_txt):
    best = 0.5
    values = np.unique(np.concatenate([p_img, p_txt]))
    for t in values:
        above = 0.5 * (p_img > t).mean() + 0.5 * (p_txt <= t).mean()
        best = max(best, above, 1 - above)
    return best


def test_projection_table_and_search_planted(world):
    sae = planted_sae(world, threshold=0.25)
    A_img, A_txt = world.images.numpy(), world.texts.numpy()
    D = world.dictionary.numpy()
    table = projection.concept_table(sae, A_img, A_txt)
    p_img, p_txt = A_img @ D.T, A_txt @ D.T
    z_img, z_txt = p_img * (p_img > 0.25), p_txt * (p_txt > 0.25)
    with np.errstate(invalid="ignore"):
        score = z_img.mean(0) / (z_img.mean(0) + z_txt.mean(0))
    np.testing.assert_allclose(table["modality_score"], score, rtol=1e-4)
    np.testing.assert_allclose(table["fire_text"], (z_txt > 0).mean(0))
    for i in (0, 20, 40):
        assert table["accuracy_decoder"][i] == pytest.approx(brute_force_accuracy(p_img[:, i], p_txt[:, i]), abs=1e-6)
    np.testing.assert_allclose(table["accuracy_encoder"], table["accuracy_decoder"], atol=1e-6)

    found = projection.find_projection_concepts(table, max_accuracy=0.7, margin=0.1)
    assert len(found) >= 4
    assert set(world.modality[found]) <= {"image", "text"}  # never a shared concept
    assert all(table["accuracy_decoder"][i] <= 0.7 for i in found)
    assert list(table["energy"][found]) == sorted(table["energy"][found], reverse=True)

    one = projection.concept_projection(sae, A_img, A_txt, int(found[0]))
    np.testing.assert_allclose(one["image"], p_img[:, found[0]], rtol=1e-5, atol=1e-6)
    assert one["line_image"] == pytest.approx(0.25)
    assert one["above_text"] == pytest.approx(float((p_txt[:, found[0]] > 0.25).mean()))
    assert one["accuracy_encoder"] == pytest.approx(table["accuracy_decoder"][found[0]], abs=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        projection.concept_projection(sae, A_img, A_txt, 10_000)


# ----------------------------------------------------------------------------- ablation
def test_gap_and_bimodality_measures():
    rng = np.random.default_rng(3)
    offset = np.zeros(16)
    offset[0] = 1.0
    image, text = rng.normal(size=(400, 16)) + 3 * offset, rng.normal(size=(300, 16)) - 3 * offset
    measured = ablation.modality_gap(image, text)
    assert measured["gap"] == pytest.approx(np.linalg.norm(image.mean(0) - text.mean(0)))
    assert measured["separability"] > 0.99
    same = ablation.modality_gap(rng.normal(size=(400, 16)), rng.normal(size=(400, 16)))
    assert same["separability"] < 0.6

    values = rng.random(500)
    n = len(values)
    m = values.mean()
    m2, m3, m4 = (((values - m) ** p).mean() for p in (2, 3, 4))
    g = np.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5
    k = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    expected = (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert ablation.bimodality_coefficient(values) == pytest.approx(expected, rel=1e-9)
    assert ablation.bimodality_coefficient(np.r_[np.zeros(50), np.ones(50)]) > 0.95

    score = np.array([0.05, 0.5, 0.95, np.nan, 0.2])
    energy = np.array([1.0, 2.0, 3.0, 0.0, 4.0])
    stats = ablation.unimodal_statistics(score, energy, margin=0.1)
    assert stats["unimodal_fraction"] == pytest.approx(2 / 4)
    assert stats["unimodal_energy"] == pytest.approx(4 / 10)


def test_ablation_setting_runs_and_names_missing_switches(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSAE_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="not available"):
        ablation.run_setting("no such setting", sizes=ablation.QUICK)
    tiny = {"n_pairs": 128, "steps": 2, "batch_size": 64, "n_eval": 40, "sae_c": 16, "sae_k": 2, "sae_steps": 5}
    first = ablation.run_setting("fixed tau=0.01, noisy captions", sizes=tiny)
    assert np.isfinite([first[c] for c in ("gap", "separability", "unimodal_fraction", "retrieval_top1")]).all()
    assert len(first["modality_score"]) == 16
    assert ablation.run_setting("fixed tau=0.01, noisy captions", sizes=tiny) == first  # cached
    from vlmsae.models.toyclip import ToyCLIPConfig

    fields = set(ToyCLIPConfig.__dataclass_fields__)
    for name, needed in ablation.missing_settings().items():
        assert needed and not set(needed) <= fields and name not in ablation.available_settings()


def test_shapes_thumbnails_are_the_rendered_images_of_those_rows(tmp_path):
    from vlmsae.data import shapes
    from vlmsae.embed import get_or_extract

    emb = get_or_extract("toyclip", "shapes", cache_root=tmp_path, data_kwargs={"n": 120, "seed": 2})
    rows = [0, 7, 119]
    expected = shapes.render_shapes(120, 2, "train").images[np.asarray(emb.ids)[rows]]
    np.testing.assert_array_equal(bridges.shapes_thumbnails(emb, rows), expected)
