"""Tiny random models of every back end, built offline and saved the way a user's model is.

Each builder writes to a folder and returns what a user would pass to ``vlmsae.models.load``:
``open_clip:<arch>/<checkpoint path>`` or ``hf:<folder>``. Sizes are minimal (2 layers, width 32,
32x32 images) so building all of them takes a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WORDS = ("a an the of on in with and small large red green blue yellow circle square triangle "
         "photo picture dog cat car tree sky next to left right top bottom").split()
IMAGE_SIZE, PATCH, WIDTH, TEXT_LEN = 32, 8, 32, 16
TOY_ARCH = "vlmsae-test-tiny-vit"


def random_images(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def random_captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]


def build_tokenizer():
    """A word-level tokenizer trained with ``tokenizers``: [BOS] words [EOS], [PAD] for padding."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)] * 3, trainers.WordLevelTrainer(special_tokens=specials))
    bos, eos = tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]")
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", bos), ("[EOS]", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=TEXT_LEN,
                                   model_input_names=["input_ids", "attention_mask"])
    return fast


def build_sentencepiece_tokenizer(folder: Path):
    """transformers' SiglipTokenizer over a tiny sentencepiece model trained here (pad = eos =
    ``</s>``, as in SigLIP)."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "spm_corpus.txt"
    corpus.write_text("\n".join(random_captions(200, seed=0)))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spm"), vocab_size=50,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   eos_piece="</s>", unk_piece="<unk>", minloglevel=2)
    corpus.unlink()
    return SiglipTokenizer(vocab_file=str(folder / "spm.model"), model_max_length=TEXT_LEN)


def _text_cfg(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=TEXT_LEN, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)


def _vision_cfg(**extra) -> dict:
    return dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=2,
                patch_size=PATCH, **extra)


MEAN, STD = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]


def build_hf(kind: str, folder: Path, seed: int = 0) -> str:
    """Save a tiny random ``kind`` model (clip, siglip, siglip2, aimv2, or clip-base: the
    ViT-B/32 sizes of openai/clip-vit-base-patch32) with tokenizer and image processor to
    ``folder``; return its registry name ``hf:<folder>``."""
    import transformers as tf

    torch.manual_seed(seed)
    folder = Path(folder)
    if kind == "clip-base":
        tokenizer = build_tokenizer()
        text = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                    bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
        model = tf.CLIPModel(tf.CLIPConfig(text_config=text))  # library defaults are the ViT-B/32 sizes
        processor = tf.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size=224, image_mean=MEAN, image_std=STD)
    elif kind == "clip":
        tokenizer = build_tokenizer()
        config = tf.CLIPConfig(text_config=_text_cfg(tokenizer), vision_config=_vision_cfg(image_size=IMAGE_SIZE),
                               projection_dim=24)
        model = tf.CLIPModel(config)
        processor = tf.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE,
                                          image_mean=MEAN, image_std=STD)
    elif kind == "siglip":
        tokenizer = build_sentencepiece_tokenizer(folder)  # SigLIP's own tokenizer class
        config = tf.SiglipConfig(text_config=_text_cfg(tokenizer), vision_config=_vision_cfg(image_size=IMAGE_SIZE))
        model = tf.SiglipModel(config)
        processor = tf.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3)
    elif kind == "siglip2":
        # transformers maps siglip2 folders to its Gemma-style Siglip2Tokenizer whatever was saved:
        # build that class, over characters (BPE without merges)
        chars = "\u2581abcdefghijklmnopqrstuvwxyz"
        vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *chars])}
        tokenizer = tf.Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=TEXT_LEN)
        n_patches = (IMAGE_SIZE // PATCH) ** 2
        config = tf.Siglip2Config(text_config=_text_cfg(tokenizer), vision_config=_vision_cfg(num_patches=n_patches))
        model = tf.Siglip2Model(config)
        processor = tf.Siglip2ImageProcessor(patch_size=PATCH, max_num_patches=n_patches,
                                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
    elif kind == "aimv2":
        tokenizer = build_tokenizer()
        config = tf.Aimv2Config(text_config=_text_cfg(tokenizer), vision_config=_vision_cfg(image_size=IMAGE_SIZE),
                                projection_dim=24)
        model = tf.Aimv2Model(config)
        processor = tf.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE,
                                          image_mean=MEAN, image_std=STD)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return f"hf:{folder}"


def register_tiny_open_clip(folder: Path) -> str:
    """Register the tiny open_clip architecture (idempotent); return its arch name."""
    import open_clip

    if TOY_ARCH not in open_clip.list_models():
        cfg = {"embed_dim": 24,
               "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": WIDTH, "head_width": 16,
                              "patch_size": PATCH},
               "text_cfg": {"context_length": TEXT_LEN, "vocab_size": 49408, "width": WIDTH, "heads": 2,
                            "layers": 2}}
        path = Path(folder) / f"{TOY_ARCH}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
    return TOY_ARCH


def build_open_clip(folder: Path, seed: int = 0) -> str:
    """Save a tiny random open_clip model as safetensors; return ``open_clip:<arch>/<path>``."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arch = register_tiny_open_clip(folder)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch)
    path = folder / "tiny_open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return f"open_clip:{arch}/{path}"


def write_pair_folder(folder: Path, n: int, captions_per_image: int = 2, seed: int = 0,
                      missing: tuple[int, ...] = (), corrupt: tuple[int, ...] = ()) -> Path:
    """Images ``img_<i>.png`` and a ``pairs.jsonl`` index (one row per caption) in ``folder``.

    Items in ``missing`` are listed but have no file; items in ``corrupt`` hold bytes that are
    not an image. Returns the index path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, captions = random_images(n, seed), random_captions(n * captions_per_image, seed)
    rows = []
    for i, image in enumerate(images):
        name = f"img_{i}.png"
        if i in corrupt:
            (folder / name).write_bytes(b"this is not a png")
        elif i not in missing:
            image.save(folder / name)
        rows += [{"image": name, "caption": captions[i * captions_per_image + j], "id": f"item{i}"}
                 for j in range(captions_per_image)]
    index = folder / "pairs.jsonl"
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return index
