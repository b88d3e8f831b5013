"""Model registry and adapters: tiny random models of every back end, saved and loaded the way a
user's model is, must give through ``extract`` exactly what calling the model directly gives;
unknown names and missing weights raise the named errors, without touching the network."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

import fixtures_models as fm
from vlmsae import models
from vlmsae.data import load as load_data
from vlmsae.embed import extract
from vlmsae.models import ModelNotFoundError, UnknownModelError

HF_KINDS = ("clip", "siglip", "siglip2", "aimv2")
N_ITEMS, CAPTIONS = 5, 2


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Registry names of one tiny random model per back end (built once per session)."""
    root = tmp_path_factory.mktemp("tiny_models")
    names = {kind: fm.build_hf(kind, root / kind) for kind in HF_KINDS}
    names["open_clip"] = fm.build_open_clip(root / "open_clip")
    return names


@pytest.fixture(scope="session")
def pair_folder(tmp_path_factory):
    return fm.write_pair_folder(tmp_path_factory.mktemp("pairs"), N_ITEMS, CAPTIONS, seed=3)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the code tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------------------------------------
# independent computation: numpy preprocessing + the library's own model class, full forward
# ---------------------------------------------------------------------------------------------
def _pixels(images, mean, std) -> torch.Tensor:
    """(n, 3, 32, 32) normalised pixels of 32x32 images (the processors' resize is then a no-op)."""
    x = np.stack([np.asarray(im, dtype=np.float64) / 255.0 for im in images])
    x = (x - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def _patches(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """NaFlex input of SigLIP2: (n, patches, patch*patch*3), row-major patches, (p, p, C) inside."""
    n, c, h, w = pixels.shape
    x = pixels.permute(0, 2, 3, 1).reshape(n, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def _word_ids(texts):
    """Token ids of the fixture word tokenizer written out: [BOS] lower-case words [EOS], then
    [PAD] up to the longest text, and the matching attention mask."""
    vocab = fm.build_tokenizer().get_vocab()
    rows = [[vocab["[BOS]"], *[vocab[w] for w in t.lower().split()], vocab["[EOS]"]] for t in texts]
    length = max(map(len, rows))
    ids = torch.tensor([r + [vocab["[PAD]"]] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


def direct_hf(kind: str, folder: str, images, texts):
    """Unit-norm (image, text) embeddings of a saved tiny model called directly, following each
    model card: CLIP/AIMv2 pad to the longest text of *all* texts with a mask, SigLIP pads to max
    length with no mask, SigLIP2 pads to max length with a mask and takes NaFlex patches."""
    import transformers as tf

    cls = {"clip": tf.CLIPModel, "siglip": tf.SiglipModel, "siglip2": tf.Siglip2Model, "aimv2": tf.Aimv2Model}[kind]
    model = cls.from_pretrained(folder).eval()
    if kind in ("clip", "aimv2"):
        ids, mask = _word_ids(texts)
        kwargs = {"input_ids": ids, "attention_mask": mask, "pixel_values": _pixels(images, fm.MEAN, fm.STD)}
    else:
        # SigLIP's and SigLIP2's tokenizers are transformers' own classes (see fixtures_models.build_hf)
        tokens = tf.AutoTokenizer.from_pretrained(folder)(texts, padding="max_length", max_length=fm.TEXT_LEN,
                                                          truncation=True, return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
    if kind == "siglip":
        kwargs = {"input_ids": ids, "pixel_values": _pixels(images, [0.5] * 3, [0.5] * 3)}  # no text mask
    elif kind == "siglip2":
        side = fm.IMAGE_SIZE // fm.PATCH
        kwargs = {"input_ids": ids, "attention_mask": mask,
                  "pixel_values": _patches(_pixels(images, [0.5] * 3, [0.5] * 3), fm.PATCH),
                  "pixel_attention_mask": torch.ones(len(images), side * side, dtype=torch.long),
                  "spatial_shapes": torch.tensor([[side, side]] * len(images))}
    with torch.no_grad():
        out = model(**kwargs)  # the full forward returns unit-norm image_embeds / text_embeds
    return out.image_embeds.numpy(), out.text_embeds.numpy()


def direct_open_clip(name: str, images, texts):
    import open_clip
    from safetensors.torch import load_file

    arch, _, path = name.removeprefix("open_clip:").partition("/")
    model = open_clip.create_model(arch).eval()
    model.load_state_dict(load_file(path))
    pixels = _pixels(images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.no_grad():
        image, text = model.encode_image(pixels), model.encode_text(open_clip.get_tokenizer(arch)(texts))
    return (torch.nn.functional.normalize(image, dim=-1).numpy(),
            torch.nn.functional.normalize(text, dim=-1).numpy())


def _source_items(index):
    source = load_data(f"folder:{index}")
    images = [source[i][0] for i in range(len(source))]
    texts = [c for i in range(len(source)) for c in source.captions_of(i)]
    return source, images, texts


@pytest.mark.parametrize("kind", [*HF_KINDS, "open_clip"])
def test_extraction_equals_direct_model_call(kind, tiny_models, pair_folder, tmp_path, no_network):
    source, images, texts = _source_items(pair_folder)
    name = tiny_models[kind]
    model = models.load(name)
    # batch 2 and shards of 3 items: several batches and shards must join up in order
    result = extract(model, source, tmp_path / "emb", batch_size=2, shard_size=3, progress=False)
    if kind == "open_clip":
        want_image, want_text = direct_open_clip(name, images, texts)
    else:
        want_image, want_text = direct_hf(kind, name.removeprefix("hf:"), images, texts)
    assert result.image.shape == (N_ITEMS, model.dim) and result.text.shape == (N_ITEMS * CAPTIONS, model.dim)
    np.testing.assert_allclose(result.image, want_image, atol=2e-5)
    np.testing.assert_allclose(result.text, want_text, atol=2e-5)
    # captions of one image differ, so a pairing or ordering slip shows up as a mismatch
    assert not np.allclose(want_text[0], want_text[1], atol=1e-3)


def test_encode_is_raw_and_batch_size_independent(tiny_models, pair_folder):
    _, images, texts = _source_items(pair_folder)
    model = models.load(tiny_models["siglip"])
    raw_text = model.encode_texts(texts, batch_size=3).numpy()
    # siglip pools the last position: with padding to the longest text this would depend on the batch
    np.testing.assert_allclose(raw_text, model.encode_texts(texts, batch_size=len(texts)).numpy(), atol=1e-5)
    norms = np.linalg.norm(model.encode_images(images, batch_size=2).numpy(), axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3), "encode_* must return raw, unnormalised embeddings"


def test_siglip2_uses_saved_patch_sizes_not_processor_defaults(tiny_models, pair_folder):
    import transformers as tf

    _, images, _ = _source_items(pair_folder)
    folder = tiny_models["siglip2"].removeprefix("hf:")
    model = models.load(tiny_models["siglip2"])
    inputs = model.preprocess_images(images[:1])
    n_patches = (fm.IMAGE_SIZE // fm.PATCH) ** 2
    assert inputs["pixel_values"].shape == (1, n_patches, fm.PATCH * fm.PATCH * 3)
    # the trap this guards against: the combined processor falls back to its class defaults
    processor = tf.Siglip2Processor(image_processor=tf.AutoImageProcessor.from_pretrained(folder),
                                    tokenizer=tf.AutoTokenizer.from_pretrained(folder))
    assert processor(images=images[:1], return_tensors="pt")["pixel_values"].shape[1] != n_patches


def test_aliases_resolve_to_the_papers_models():
    assert models.resolve("clip") == "hf:openai/clip-vit-base-patch32"
    assert models.resolve("siglip") == "hf:google/siglip-base-patch16-224"
    assert models.resolve("siglip2") == "hf:google/siglip2-base-patch16-224"
    assert models.resolve("aimv2") == "hf:apple/aimv2-large-patch14-224-lit"
    assert models.resolve("toyclip") == "toyclip"


def test_toyclip_is_loaded_lazily_through_its_own_module(monkeypatch):
    import vlmsae.models.toyclip as toyclip

    calls = []
    monkeypatch.setattr(toyclip, "load_toyclip", lambda device="cpu", **kw: calls.append((device, kw)) or "toy")
    assert models.load("toyclip", device="meta", folder="x") == "toy" and calls == [("meta", {"folder": "x"})]


@pytest.mark.parametrize("name", ["clop", "open_clip:", "hf:", "huggingface:openai/clip", ""])
def test_unknown_model_name_lists_known_names(name):
    with pytest.raises(UnknownModelError) as info:
        models.load(name)
    message = str(info.value)
    assert all(known in message for known in ("toyclip", "clip", "siglip2", "aimv2", "open_clip:", "hf:"))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name, fetch", [
    ("clip", "huggingface-cli download openai/clip-vit-base-patch32"),
    ("open_clip:ViT-B-32/openai", "huggingface-cli download timm/vit_base_patch32_clip_224.openai"),
])
def test_missing_weights_name_model_place_and_fetch_command(name, fetch, tmp_path, no_network):
    with pytest.raises(ModelNotFoundError) as info:
        models.load(name, cache_dir=str(tmp_path))  # an empty cache: nothing may be downloaded
    message = str(info.value)
    assert models.resolve(name).removeprefix("hf:") in message and str(tmp_path) in message and fetch in message
    err = info.value  # the library's own stack trace must not be chained in
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_missing_open_clip_checkpoint_path(tiny_models, tmp_path):
    arch = tiny_models["open_clip"].removeprefix("open_clip:").partition("/")[0]
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(ModelNotFoundError, match="nowhere.safetensors"):
        models.load(f"open_clip:{arch}/{missing}")
    with pytest.raises(ValueError, match="neither a pretrained tag"):
        models.load(f"open_clip:{arch}/not-a-tag")


def test_local_folder_without_weights(tiny_models, tmp_path, no_network):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(tiny_models["clip"].removeprefix("hf:"), folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelNotFoundError) as info:
        models.load(f"hf:{folder}")
    assert str(folder) in str(info.value) and "save_pretrained" in str(info.value)


def test_unsupported_transformers_model_type(tmp_path):
    import transformers as tf

    tf.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert'.*clip, siglip, siglip2, aimv2"):
        models.load(f"hf:{tmp_path}")


def test_local_paths_resolve_to_one_absolute_name(tiny_models, monkeypatch):
    folder = tiny_models["clip"].removeprefix("hf:")
    monkeypatch.chdir(os.path.dirname(folder))
    relative = f"hf:{os.path.basename(folder)}"
    assert models.resolve(relative) == f"hf:{os.path.realpath(folder)}" == models.load(relative).name
    arch, _, checkpoint = tiny_models["open_clip"].removeprefix("open_clip:").partition("/")
    monkeypatch.chdir(os.path.dirname(checkpoint))
    relative = f"open_clip:{arch}/{os.path.basename(checkpoint)}"
    assert models.resolve(relative) == f"open_clip:{arch}/{os.path.realpath(checkpoint)}" == models.load(relative).name
    assert models.resolve("hf:org/not-here") == "hf:org/not-here"  # hub ids stay as they are
