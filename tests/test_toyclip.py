"""toyclip: the shipped weights retrieve held-out captions far above chance; training is
deterministic for a seed, learns, and resumes from a checkpoint with identical results."""

import json

import numpy as np
import pytest
import torch

from vlmsae.data.shapes import ShapesPairs, render_shapes
from vlmsae.models import toyclip
from vlmsae.models.toyclip import load_toyclip, retrieval_accuracy, train_toyclip

TINY = dict(n_pairs=2048, steps=120, seed=3, progress=False)


def loop_retrieval(image_emb, text_emb, k):
    """Independent image->text top-k with plain loops: own caption strictly more similar than
    all but at most k-1 others (ties count against it)."""
    a = image_emb.numpy() / np.linalg.norm(image_emb.numpy(), axis=1, keepdims=True)
    b = text_emb.numpy() / np.linalg.norm(text_emb.numpy(), axis=1, keepdims=True)
    hits = 0
    for i in range(len(a)):
        sims = [float(a[i] @ b[j]) for j in range(len(b))]
        better = sum(1 for j in range(len(b)) if j != i and sims[j] >= sims[i])
        hits += better < k
    return hits / len(a)


@pytest.fixture(scope="module")
def shipped():
    assert toyclip._has_weights(toyclip.WEIGHTS_DIR), "shipped toyclip weights are missing from the package"
    return load_toyclip()


def test_shipped_weights_retrieve_held_out_captions(shipped):
    pairs = ShapesPairs(n=500, seed=0, split="test")
    images, captions, _ = zip(*pairs)
    image_emb = shipped.encode_images(list(images))
    text_emb = shipped.encode_texts([c[0] for c in captions])
    assert image_emb.shape == text_emb.shape == (500, shipped.dim) and shipped.name == "toyclip"
    # the PIL path and the array path agree
    torch.testing.assert_close(image_emb, shipped.encode_image_array(pairs.images))
    acc = retrieval_accuracy(image_emb, text_emb, ks=(1, 5))
    small = retrieval_accuracy(image_emb[:200], text_emb[:200], ks=(1,))["top1"]
    assert small == pytest.approx(loop_retrieval(image_emb[:200], text_emb[:200], 1), abs=0.011)  # float ties
    assert acc["top5"] > 0.8 and acc["top1"] > 0.5       # shipped: 0.856 and 0.594; chance: 0.01 and 0.002
    # the same model with the captions shuffled is at chance
    perm = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    assert retrieval_accuracy(image_emb, text_emb[perm])["top5"] < 0.05


def test_retrieval_accuracy_matches_loops():
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen)
    txt[:20] += 2 * img[:20]          # half the pairs aligned
    txt[5] = txt[6]                   # a tie
    acc = retrieval_accuracy(img, txt, ks=(1, 3))
    assert acc["top1"] == pytest.approx(loop_retrieval(img, txt, 1))
    assert acc["top3"] == pytest.approx(loop_retrieval(img, txt, 3))


@pytest.fixture(scope="module")
def tiny_runs():
    # different global RNG states before the two runs: the result may depend on the seed only
    torch.manual_seed(11)
    first = train_toyclip(**TINY)
    torch.manual_seed(12)
    torch.rand(5)
    return first, train_toyclip(**TINY)


def test_training_is_deterministic_and_learns(tiny_runs):
    (a, hist_a), (b, hist_b) = tiny_runs
    state_a, state_b = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert hist_a["loss"] == hist_b["loss"]
    loss = np.array(hist_a["loss"])
    assert loss[-10:].mean() < 0.8 * loss[:10].mean()
    batch = render_shapes(300, seed=0, split="test")
    acc = retrieval_accuracy(a.encode_image_array(batch.images), a.encode_texts([c[0] for c in batch.captions]))
    assert acc["top5"] > 5 * 5 / 300                       # five times chance


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch, tiny_runs):
    (reference, _), _ = tiny_runs
    ckpt = tmp_path / "toyclip.ckpt"
    original = toyclip._batch_indices

    def interrupted(step, n, cfg):
        if step == 70:
            raise KeyboardInterrupt
        return original(step, n, cfg)

    monkeypatch.setattr(toyclip, "_batch_indices", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_toyclip(**TINY, checkpoint=ckpt, checkpoint_every=50)
    monkeypatch.setattr(toyclip, "_batch_indices", original)
    assert torch.load(ckpt, weights_only=True)["step"] == 50
    resumed, _ = train_toyclip(**TINY, checkpoint=ckpt, checkpoint_every=50)
    ref = reference.net.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in resumed.net.state_dict().items())


def test_save_load_round_trip_and_errors(tmp_path, tiny_runs):
    (model, _), _ = tiny_runs
    toyclip.save_toyclip(model, tmp_path / "w")
    loaded = load_toyclip(folder=tmp_path / "w")
    texts = ["a red circle", "a photo of a big blue box at the top and a cross"]
    torch.testing.assert_close(loaded.encode_texts(texts), model.encode_texts(texts))
    with pytest.raises(ValueError, match="no toyclip weights"):
        load_toyclip(folder=tmp_path / "empty")
    with pytest.raises(ValueError, match="PIL images"):
        model.encode_images([np.zeros((32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="unknown toyclip settings"):
        train_toyclip(n_pairs=256, steps=1, widht=3)
    with pytest.raises(ValueError, match="unknown image_pool 'max'"):
        train_toyclip(n_pairs=256, steps=1, image_pool="max")
    # a folder saved before image_pool existed (its tower flattened the map) asks to be retrained
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    del config["image_pool"]
    (tmp_path / "w" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="older toyclip.*retrain"):
        load_toyclip(folder=tmp_path / "w")


def test_image_pool_chooses_what_the_image_tower_sees():
    from vlmsae.models.toyclip import ImageTower, ToyCLIPConfig

    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    mean_tower = ImageTower(ToyCLIPConfig(image_pool="mean"))
    flat_tower = ImageTower(ToyCLIPConfig(image_pool="flatten"))
    assert mean_tower.head[2].in_features == 128 and flat_tower.head[2].in_features == 128 * 4 * 4
    # mean pooling sees the feature map only through its average over positions
    features = mean_tower.convs(pixels)
    expected = mean_tower.head[2:](features.mean(dim=(2, 3)))
    torch.testing.assert_close(mean_tower(pixels), expected)
    assert flat_tower(pixels).shape == (2, 128)


def test_full_caption_names_every_object_completely():
    from vlmsae.data import shapes

    batch = shapes.render_shapes(40, seed=3)
    for i in range(40):
        caption = shapes.full_caption(batch.attributes, i)
        for slot in range(int(batch.attributes["n_objects"][i])):
            colour = shapes.COLOURS[batch.attributes["colour"][i, slot]]
            shape = shapes.SHAPES[batch.attributes["shape"][i, slot]]
            assert shapes.COLOUR_WORDS[colour][0] in caption and shapes.SHAPE_WORDS[shape][0] in caption
        assert caption.count(" and ") == int(batch.attributes["n_objects"][i]) - 1


def test_ablation_switches_learn_the_temperature_and_use_clean_captions():
    import math

    from vlmsae.models.toyclip import train_toyclip

    model, _ = train_toyclip(n_pairs=256, steps=12, seed=0, batch_size=64, progress=False,
                             learn_temperature=True, temperature=0.07, clean_captions=True)
    log_scale = model.net.log_scale.item()
    assert log_scale != math.log(1 / 0.07)  # it was trained
    assert model.cfg.clean_captions and model.cfg.learn_temperature
