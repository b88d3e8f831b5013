"""The planted two-modality generator keeps its promises, and the metrics find what was planted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmsae import metrics
from vlmsae.planted import two_modality_data


@pytest.fixture(scope="module")
def planted():
    return two_modality_data(n_images=2000, d=64, seed=0)


def planted_fraction(top, planted_pairs, to_planted=None):
    """Fraction of (i, j, score) entries whose (mapped) pair is a planted bridge."""
    to_planted = to_planted or {}
    return np.mean([(to_planted.get(i, i), to_planted.get(j, j)) in planted_pairs for i, j, _ in top])


def test_truth_reconstructs_the_normalised_embeddings(planted):
    p = planted
    assert torch.allclose(p.images.norm(dim=1), torch.ones(len(p.images)), atol=1e-6)
    assert torch.allclose(p.texts.norm(dim=1), torch.ones(len(p.texts)), atol=1e-6)
    offset = p.offset_direction
    assert torch.allclose(p.images, p.image_codes @ p.dictionary + p.image_offset[:, None] * offset, atol=1e-6)
    assert torch.allclose(p.texts, p.text_codes @ p.dictionary + p.text_offset[:, None] * offset, atol=1e-6)
    assert (p.image_offset > 0).all() and (p.text_offset < 0).all()
    assert torch.allclose(p.dictionary.norm(dim=1), torch.ones(len(p.dictionary)), atol=1e-6)
    assert (p.dictionary @ offset).abs().max() < 1e-6


def test_modalities_bridges_and_power_law(planted):
    p = planted
    image, text, shared = p.concepts("image"), p.concepts("text"), p.concepts("shared")
    assert (p.text_codes[:, image] == 0).all() and (p.image_codes[:, text] == 0).all()
    assert (p.image_codes[:, shared] > 0).any(0).all() and (p.text_codes[:, shared] > 0).any(0).all()
    # shared concepts are orthogonal to every modality-specific concept
    assert (p.dictionary[shared] @ p.dictionary[torch.cat([image, text])].T).abs().max() < 1e-6
    for i, j in p.bridges.tolist():
        assert p.modality[i] == "image" and p.modality[j] == "text"
        assert float(p.dictionary[i] @ p.dictionary[j]) == pytest.approx(0.6, abs=1e-5)
        # co-occurrence on pairs: the caption has j exactly when its image has i
        assert torch.equal(p.paired_image_codes()[:, i] > 0, p.text_codes[:, j] > 0)
    # Zipf within the shared block: the most frequent concept fires far more often than the rarest
    usage = (p.image_codes[:, shared] > 0).float().mean(0)
    assert usage[0] > 5 * usage[-1]
    assert np.corrcoef(usage.numpy(), p.frequency[shared].numpy())[0, 1] > 0.9


def test_several_captions_per_image_share_the_scene():
    p = two_modality_data(n_images=50, d=64, captions_per_image=3, seed=1)
    assert len(p.texts) == 150 and torch.equal(p.pairing, torch.arange(50).repeat_interleave(3))
    shared = p.concepts("shared")
    assert torch.equal(p.paired_image_codes()[:, shared] > 0, p.text_codes[:, shared] > 0)


def test_generator_rejects_impossible_settings():
    with pytest.raises(ValueError, match="need d >="):
        two_modality_data(n_images=10, d=20)
    with pytest.raises(ValueError, match="k_shared"):
        two_modality_data(n_images=10, n_shared=2, k_shared=3)
    with pytest.raises(ValueError, match="bridge_cosine"):
        two_modality_data(n_images=10, bridge_cosine=0.4)


def test_metrics_on_the_planted_truth(planted):
    p = planted
    scores = metrics.modality_score(p.image_codes, p.text_codes)
    assert (scores[p.concepts("image")] == 1).all() and (scores[p.concepts("text")] == 0).all()
    assert np.abs(scores[p.concepts("shared")] - 0.5).max() < 0.1
    directions = torch.cat([p.offset_direction[None], p.dictionary[p.concepts("shared")]])
    accuracy = metrics.modality_classifier_accuracy(p.images, p.texts, directions)
    assert accuracy[0] == 1.0
    assert (accuracy[1:] < 0.56).all()
    planted_pairs = {tuple(pair) for pair in p.bridges.tolist()}
    n = len(planted_pairs)
    B = metrics.bridge_matrix(p.paired_image_codes(), p.text_codes, p.dictionary)
    assert planted_fraction(metrics.top_bridges(B, n), planted_pairs) >= 0.6
    # Every planted bridge outscores every unplanted (image concept, text concept) pair; only
    # frequent shared concepts with aligned directions may come between (they co-fire on pairs).
    image, text = p.concepts("image").numpy(), p.concepts("text").numpy()
    unplanted = [B[i, j] for i in image for j in text if (i, j) not in planted_pairs]
    assert min(B[i, j] for i, j in planted_pairs) > max(unplanted)
    shuffle = torch.randperm(len(p.texts), generator=torch.Generator().manual_seed(0))
    B_shuffled = metrics.bridge_matrix(p.paired_image_codes()[shuffle], p.text_codes, p.dictionary)
    assert planted_fraction(metrics.top_bridges(B_shuffled, n), planted_pairs) < 0.05


def test_a_trained_batchtopk_sae_recovers_the_planted_structure(planted):
    from vlmsae.sae import BatchTopKSAE
    from vlmsae.train import train_sae

    p = planted
    torch.manual_seed(0)
    # k = 6, the planted number of concepts per embedding (3 shared, 1 bridge, 2 own); a budget
    # much above it lets the SAE spend two codes on a bridge text (bridge image + remainder).
    sae = BatchTopKSAE(64, 128, 6)
    train_sae(sae, torch.cat([p.images, p.texts]), steps=600, batch_size=256, lr=3e-3, seed=0, progress=False)
    sae.eval()
    with torch.no_grad():
        Z_img, Z_txt = sae.encode(p.images)[1], sae.encode(p.texts)[1]
        D = sae.dictionary.detach().clone()
    planted_rows, learned_rows, cosines = metrics.match_concepts(p.dictionary, D)
    assert np.median(cosines) > 0.9
    modality_of_learned = dict(zip(learned_rows.tolist(), p.modality[planted_rows]))
    scores = metrics.modality_score(Z_img, Z_txt)
    image_learned = [j for j, m in modality_of_learned.items() if m == "image"]
    text_learned = [j for j, m in modality_of_learned.items() if m == "text"]
    assert (scores[image_learned] > 0.9).all()
    assert (scores[text_learned] < 0.1).all()

    learned_to_planted = dict(zip(learned_rows.tolist(), planted_rows.tolist()))
    planted_pairs = {tuple(pair) for pair in p.bridges.tolist()}
    n = len(planted_pairs)
    B = metrics.bridge_matrix(Z_img[p.pairing], Z_txt, D)
    assert planted_fraction(metrics.top_bridges(B, n), planted_pairs, learned_to_planted) >= 0.6
    shuffle = torch.randperm(len(p.texts), generator=torch.Generator().manual_seed(1))
    B_shuffled = metrics.bridge_matrix(Z_img[p.pairing][shuffle], Z_txt, D)
    assert planted_fraction(metrics.top_bridges(B_shuffled, n), planted_pairs, learned_to_planted) < 0.05

    accuracy = metrics.modality_classifier_accuracy(p.images, p.texts, D)
    along_offset = int((D @ p.offset_direction).abs().argmax())
    assert accuracy[along_offset] > 0.98
    shared_learned = [j for j, m in modality_of_learned.items() if m == "shared"]
    assert np.median(accuracy[shared_learned]) < 0.6
