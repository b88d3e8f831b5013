"""toyclip: a small contrastive vision-language model trained on the ``shapes`` world.

No pretrained VLM can be downloaded on every machine, so vlmsae ships its own real one:

* image tower: strided CNN on 32x32 RGB (3 -> 32 -> 64 -> 128 channels, stride 2 each, GELU),
  the 4x4x128 map averaged over its positions -> MLP -> projection to ``dim``;
* text tower: word embeddings over the shapes vocabulary + learned positions, a [CLS] token,
  2 pre-norm transformer encoder layers, the [CLS] output -> projection to ``dim``;
* loss: symmetric InfoNCE over a batch of B matched pairs,
  ``L = (CE(S, arange(B)) + CE(S^T, arange(B))) / 2`` with ``S = (I T^T) / tau`` on L2-normalised
  embeddings I, T and a FIXED temperature tau = 0.01 (never learned);
* AdamW, linear warmup then cosine decay to 0, batch 128, a fixed number of steps.

Why a fixed temperature and noisy captions: with clean captions or a learnable temperature the
modality gap collapses and the paper's central finding (high-energy SAE concepts fire for one
modality only) disappears; with them it appears, as in real CLIP-like models.

Measured with the shipped weights (``vlmsae/models/toyclip_weights``: seed 0, d=128, 100k pairs,
6,000 steps; ``benchmarks/toyclip_quality.py``): image->text top-1 0.476 and top-5 0.783 on 1,000
held-out pairs (chance 0.001 / 0.005; ranking captions by the ground truth, those that fit the
image first and the more specific first, reaches 0.69 / 0.96: many captions fit several images);
images and captions perfectly linearly separable (held-out logistic regression accuracy 1.0,
distance between the modality means 0.85 on unit vectors); BatchTopK SAEs (c=256, k=8, 20,000
steps) on the embeddings have 96.4% of their live concepts unimodal (modality score <= 0.1 or
>= 0.9; 3 seeds: 96.0, 97.2, 96.0%; 89% energy-weighted), a bimodal modality-score histogram, top
bridges that pair image and text concepts of one attribute (5 of the top 10: orange-orange,
purple-purple, ...; the others pair two shapes) and 1.66 times the positive bridge mass of
shuffled pairs. The few concepts that fire for both modalities are position concepts (a "left
column" concept fires for images with an object on the left and for captions saying "left").

Why the image tower averages over positions: the first shipped tower flattened the 4x4 map,
which encodes where an object is linearly, as the text tower encodes position words; SAEs then
kept one concept per grid cell that fired for both modalities (3,000 SAE steps: 86% unimodal,
81% energy-weighted, retrieval 0.466 / 0.781). Averaging, as pooled CNN and ViT towers do, gives
90% and 90% at the same 3,000 steps and slightly better retrieval. Other settings, same measures
(3,000 SAE steps): d=64, 50k pairs, 2,500 steps gave 0.377 / 0.688 and 72% unimodal; fewer
training steps raise the unimodal share and lower retrieval (mean pooling, 2,500 / 4,000 / 6,000
steps: 0.338 / 0.423 / 0.476 top-1, 88% / 91% / 90% unimodal); with the flattening tower,
temperatures 0.005 and 0.02, wider object jitter and dropping positions from more captions did
not help. Training takes about 8 minutes on one CPU core (13 steps/s).

Training is deterministic for a seed on CPU: the initialisation comes from
``torch.manual_seed(seed)`` (in a forked RNG, so the caller's state is untouched), the data order
from per-epoch permutations of a generator seeded by (seed, epoch), and deterministic algorithms
are switched on during training. ``python -m vlmsae.models.toyclip`` retrains and saves.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vlmsae.atomic import atomic_path, atomic_write_text
from vlmsae.data import shapes
from vlmsae.models.base import EmbeddingModel

WEIGHTS_DIR = Path(__file__).with_name("toyclip_weights")
PAD, CLS, UNK = "[pad]", "[cls]", "[unk]"
_WEIGHTS_FILE, _CONFIG_FILE, _VOCAB_FILE = "model.safetensors", "config.json", "vocab.json"


@dataclass
class ToyCLIPConfig:
    """Architecture and training settings (saved as config.json next to the weights)."""

    dim: int = 128
    channels: tuple = (32, 64, 128)
    image_hidden: int = 256
    # "mean": average the last feature map over its positions (as pooled CNN and ViT towers do);
    # "flatten": keep every position, which encodes where objects are linearly (see the docstring)
    image_pool: str = "mean"
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_words: int = 24
    temperature: float = 0.01
    # the modality-gap ablation's switches (book page 08); the shipped model uses neither
    learn_temperature: bool = False   # CLIP-style learnable logit scale, initialised at 1/temperature
    clean_captions: bool = False      # train on shapes.full_caption instead of the noisy captions
    # training
    n_pairs: int = 100_000
    steps: int = 6_000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    seed: int = 0
    metrics: dict = field(default_factory=dict)


class ImageTower(nn.Module):
    """Float images (n, 3, 32, 32) in [-1, 1] (see pixels_from_uint8) -> (n, dim) projections."""

    def __init__(self, cfg: ToyCLIPConfig):
        super().__init__()
        layers, c_in = [], 3
        for c_out in cfg.channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), nn.GELU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        if cfg.image_pool == "mean":
            pool, width = nn.AdaptiveAvgPool2d(1), c_in
        elif cfg.image_pool == "flatten":
            side = shapes.IMAGE_SIZE // 2 ** len(cfg.channels)
            pool, width = nn.Identity(), c_in * side * side
        else:
            raise ValueError(f"unknown image_pool {cfg.image_pool!r}: use 'mean' or 'flatten'")
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Linear(width, cfg.image_hidden), nn.GELU(),
                                  nn.LayerNorm(cfg.image_hidden), nn.Linear(cfg.image_hidden, cfg.dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(pixels))


class TextTower(nn.Module):
    """Token ids (n, L) with [cls] first and [pad]=0 after the words -> (n, dim) projections."""

    def __init__(self, cfg: ToyCLIPConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.text_width, padding_idx=0)
        self.position = nn.Parameter(torch.zeros(cfg.max_words + 1, cfg.text_width))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(cfg.text_width, cfg.text_heads, dim_feedforward=2 * cfg.text_width,
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        # no nested-tensor fast path: training and inference take the same arithmetic
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens) + self.position[: tokens.shape[1]]
        h = self.encoder(h, src_key_padding_mask=tokens == 0)
        return self.proj(self.norm(h[:, 0]))


class ToyCLIPNet(nn.Module):
    def __init__(self, cfg: ToyCLIPConfig, vocab_size: int):
        super().__init__()
        self.image = ImageTower(cfg)
        self.text = TextTower(cfg, vocab_size)
        if cfg.learn_temperature:
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def temperature(self, cfg: ToyCLIPConfig):
        """The fixed temperature, or 1 / exp(log_scale) with the scale capped at 100 as in CLIP."""
        if not cfg.learn_temperature:
            return cfg.temperature
        return 1.0 / self.log_scale.clamp(max=math.log(100.0)).exp()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: mean of image->text and text->image cross-entropies of
    S = normalize(I) normalize(T)^T / temperature against the diagonal."""
    logits = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def pixels_from_uint8(images: np.ndarray | torch.Tensor, device="cpu") -> torch.Tensor:
    """uint8 (n, 32, 32, 3) -> float (n, 3, 32, 32), x / 127.5 - 1 (range [-1, 1])."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (32, 32, 3):
        raise ValueError(f"toyclip images must be uint8 of shape (n, 32, 32, 3), got {images.dtype} "
                         f"{tuple(images.shape)}: render them with vlmsae.data.shapes or pass PIL images")
    return images.to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def tokenize(texts: list[str], vocab: dict[str, int], max_words: int) -> torch.Tensor:
    """(n, max_words + 1) int64 ids: [cls], then the words (unknown words -> [unk]), then [pad]=0.
    Words past max_words are cut."""
    ids = torch.zeros(len(texts), max_words + 1, dtype=torch.int64)
    unk = vocab[UNK]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"toyclip texts must be strings, got {type(text).__name__} at position {i}")
        words = [vocab.get(w, unk) for w in shapes.tokenize(text)[:max_words]]
        ids[i, 0] = vocab[CLS]
        ids[i, 1:1 + len(words)] = torch.tensor(words, dtype=torch.int64)
    return ids


def build_vocab() -> dict[str, int]:
    """Word -> id over the shapes caption vocabulary; ids 0, 1, 2 are [pad], [cls], [unk]."""
    return {w: i for i, w in enumerate([PAD, CLS, UNK, *shapes.vocabulary()])}


class ToyCLIP(EmbeddingModel):
    """The adapter (see ``vlmsae.models.base``): ``encode_images(PIL images)``,
    ``encode_texts(strings)`` -> (n, dim) float32 on ``device``, unnormalised projections (as
    CLIP's ``get_*_features``); attributes ``name``, ``dim``. Batched, under
    ``torch.inference_mode``, bf16 autocast on CUDA. ``encode_image_array`` takes rendered uint8
    arrays directly."""

    name = "toyclip"

    def __init__(self, net: ToyCLIPNet, cfg: ToyCLIPConfig, vocab: dict[str, int], device="cpu",
                 precision: str = "auto"):
        self.cfg, self.vocab, self.device, self.precision = cfg, vocab, torch.device(device), precision
        self.net = net.to(self.device).eval()
        self.dim = cfg.dim

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        """PIL images (any size; converted to RGB, resized to 32x32 bilinear) -> uint8 pixels."""
        from PIL import Image

        arrays = []
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                raise ValueError(f"toyclip encodes PIL images, got {type(img).__name__} at position {i}; "
                                 "for uint8 arrays use encode_image_array")
            img = img.convert("RGB")
            if img.size != (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE):
                img = img.resize((shapes.IMAGE_SIZE, shapes.IMAGE_SIZE), Image.BILINEAR)
            arrays.append(np.asarray(img, dtype=np.uint8))
        size = (0, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3)
        return {"pixels": torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(size, dtype=torch.uint8)}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"tokens": tokenize(list(texts), self.vocab, self.cfg.max_words)}

    def _forward_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.image(pixels_from_uint8(inputs["pixels"], self.device))

    def _forward_texts(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.text(inputs["tokens"])

    def encode_image_array(self, images: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
        """uint8 (n, 32, 32, 3) images (as rendered by ``shapes.render_shapes``) -> (n, dim)."""
        pixels = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        parts = [self.embed_image_inputs({"pixels": chunk}) for chunk in pixels.split(batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, self.dim, device=self.device)


def retrieval_accuracy(image_emb: torch.Tensor, text_emb: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Image->text retrieval over n matched pairs (row i of each is pair i): the share of images
    whose own caption is among the k most cosine-similar captions. rank_i = #{j != i: s_ij >= s_ii},
    so ties (identical captions) count against the image: the numbers are never optimistic."""
    sim = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).to(image_emb.device).T
    own = sim.diagonal()
    rank = (sim >= own[:, None]).sum(dim=1) - 1
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


@contextmanager
def _deterministic(device: torch.device):
    """Deterministic algorithms while training; on CUDA only warn where an op has none (cuBLAS
    needs CUBLAS_WORKSPACE_CONFIG set before start-up to be deterministic)."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


@contextmanager
def _cpu_threads(threads: int | None):
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _lr_factor(step: int, cfg: ToyCLIPConfig) -> float:
    """Linear warmup to 1 over warmup_steps, then cosine decay to 0 at cfg.steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _batch_indices(step: int, n: int, cfg: ToyCLIPConfig) -> torch.Tensor:
    """Indices of the batch at `step`: epoch e walks a permutation drawn from a generator seeded
    by (seed, e), so the order depends on (seed, step) only and a resumed run sees the same."""
    per_epoch = n // cfg.batch_size
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return perm[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]


def train_toyclip(n_pairs: int = ToyCLIPConfig.n_pairs, steps: int = ToyCLIPConfig.steps,
                  seed: int = ToyCLIPConfig.seed, batch_size: int = ToyCLIPConfig.batch_size,
                  lr: float = ToyCLIPConfig.lr, device="cpu", checkpoint: str | Path | None = None,
                  checkpoint_every: int = 250, progress: bool = True, threads: int | None = 1,
                  **arch) -> tuple[ToyCLIP, dict]:
    """Train toyclip on ``n_pairs`` shapes pairs (split "train" of `seed`) for exactly `steps`.

    Returns (model, history) with history["loss"] a list of per-step losses and
    history["seconds"]. With `checkpoint` (a file path), the state is saved every
    `checkpoint_every` steps and an interrupted run resumes from it with identical results.
    Extra keyword arguments override architecture fields of ``ToyCLIPConfig``.

    threads: CPU threads while training (restored afterwards). One thread by default: these
    small ops gain little from more, a shared machine slows down badly when threads outnumber
    free cores, and the result does not depend on the machine's core count.
    """
    if n_pairs < batch_size:
        raise ValueError(f"n_pairs={n_pairs} is smaller than batch_size={batch_size}: use more pairs")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    unknown = set(arch) - {f for f in ToyCLIPConfig.__dataclass_fields__} - {"metrics"}
    if unknown:
        raise ValueError(f"unknown toyclip settings {sorted(unknown)}: see ToyCLIPConfig for valid names")
    cfg = ToyCLIPConfig(n_pairs=n_pairs, steps=steps, seed=seed, batch_size=batch_size, lr=lr, **arch)
    vocab = build_vocab()
    device = torch.device(device)

    batch = shapes.render_shapes(n_pairs, seed, "train")
    images = torch.from_numpy(batch.images).to(device)
    captions = ([shapes.full_caption(batch.attributes, i) for i in range(n_pairs)] if cfg.clean_captions
                else [c[0] for c in batch.captions])
    tokens = tokenize(captions, vocab, cfg.max_words).to(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ToyCLIPNet(cfg, len(vocab)).to(device)
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "position" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, cfg))
    losses = torch.zeros(steps, device=device)  # on device: no host sync per step
    start = 0
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.exists():
            state = torch.load(checkpoint, weights_only=True, map_location=device)
            if state["config"] != json.dumps(_config_dict(cfg), sort_keys=True):
                raise ValueError(f"checkpoint {checkpoint} was written with other settings: delete it or "
                                 "use another checkpoint path")
            net.load_state_dict(state["net"])
            optim.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            losses[: state["step"]] = state["losses"][: state["step"]].to(device)
            start = int(state["step"])

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    net.train()
    with _deterministic(device), _cpu_threads(threads if device.type == "cpu" else None):
        bar = tqdm(range(start, steps), desc="toyclip", disable=not progress, initial=start, total=steps)
        for step in bar:
            idx = _batch_indices(step, n_pairs, cfg).to(device)
            with autocast:
                loss = clip_loss(net.image(pixels_from_uint8(images[idx], device)), net.text(tokens[idx]),
                                 net.temperature(cfg))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optim.step()
            sched.step()
            losses[step] = loss.detach()
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                with atomic_path(checkpoint) as tmp:
                    torch.save({"net": net.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
                                "step": step + 1, "losses": losses,
                                "config": json.dumps(_config_dict(cfg), sort_keys=True)}, tmp)
    seconds = time.perf_counter() - t0
    model = ToyCLIP(net, cfg, vocab, device)
    return model, {"loss": losses.tolist(), "seconds": seconds}


def _config_dict(cfg: ToyCLIPConfig) -> dict:
    d = asdict(cfg)
    d["channels"] = list(d["channels"])
    d.pop("metrics")
    return d


def save_toyclip(model: ToyCLIP, folder: str | Path) -> Path:
    """Write model.safetensors, config.json and vocab.json into `folder` (atomically each)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.net.state_dict().items()}
    with atomic_path(folder / _WEIGHTS_FILE) as tmp:
        save_file(tensors, tmp)
    cfg = {**_config_dict(model.cfg), "metrics": model.cfg.metrics}
    atomic_write_text(folder / _CONFIG_FILE, json.dumps(cfg, indent=2) + "\n")
    words = sorted(model.vocab, key=model.vocab.get)
    atomic_write_text(folder / _VOCAB_FILE, json.dumps(words, indent=0) + "\n")
    return folder


def _has_weights(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (_WEIGHTS_FILE, _CONFIG_FILE, _VOCAB_FILE))


def default_cache_dir() -> Path:
    """Where toyclip weights trained on this machine go: $VLMSAE_CACHE/toyclip, default
    ~/.cache/vlmsae/toyclip."""
    from ..cache import cache_dir

    return cache_dir("toyclip")


def load_toyclip(device="cpu", folder: str | Path | None = None) -> ToyCLIP:
    """Load toyclip: from `folder` if given, else the weights shipped in the package, else the
    cache (``default_cache_dir()``); when none has them, train with the default settings
    (deterministic, a few minutes on CPU) and save them to the cache first."""
    if folder is not None:
        folder = Path(folder)
        if not _has_weights(folder):
            raise ValueError(f"no toyclip weights in {folder} (need {_WEIGHTS_FILE}, {_CONFIG_FILE}, {_VOCAB_FILE}): "
                             "train them with `python -m vlmsae.models.toyclip --out <folder>`")
    else:
        folder = next((f for f in (WEIGHTS_DIR, default_cache_dir()) if _has_weights(f)), None)
        if folder is None:
            folder = default_cache_dir()
            model, _ = train_toyclip()
            model.cfg.metrics = evaluate(model)
            save_toyclip(model, folder)
    from safetensors.torch import load_file

    raw = json.loads((folder / _CONFIG_FILE).read_text())
    raw["channels"] = tuple(raw["channels"])
    if "image_pool" not in raw:
        raise ValueError(f"the toyclip weights in {folder} come from an older toyclip (its image tower flattened the "
                         "feature map; the field image_pool is missing from config.json): retrain them with "
                         f"`python -m vlmsae.models.toyclip --out {folder}`")
    cfg = ToyCLIPConfig(**raw)
    words = json.loads((folder / _VOCAB_FILE).read_text())
    vocab = {w: i for i, w in enumerate(words)}
    net = ToyCLIPNet(cfg, len(vocab))
    net.load_state_dict(load_file(folder / _WEIGHTS_FILE))
    return ToyCLIP(net, cfg, vocab, device)


def evaluate(model: ToyCLIP, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Image->text retrieval top-1 / top-5 on n held-out pairs (split "test"; chance 1/n, 5/n)."""
    batch = shapes.render_shapes(n, seed, "test")
    image_emb = model.encode_image_array(batch.images)
    text_emb = model.encode_texts([c[0] for c in batch.captions])
    return retrieval_accuracy(image_emb, text_emb)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train toyclip on the shapes world and save it.")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for the weights (default: the package's)")
    parser.add_argument("--n-pairs", type=int, default=ToyCLIPConfig.n_pairs)
    parser.add_argument("--steps", type=int, default=ToyCLIPConfig.steps)
    parser.add_argument("--seed", type=int, default=ToyCLIPConfig.seed)
    parser.add_argument("--quick", action="store_true", help="reduced setting: 10k pairs, 600 steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="file to resume from / checkpoint to")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for training (default 1)")
    args = parser.parse_args(argv)
    n_pairs, steps = (10_000, 600) if args.quick else (args.n_pairs, args.steps)
    model, history = train_toyclip(n_pairs, steps, args.seed, device=args.device, checkpoint=args.checkpoint,
                                   threads=args.threads)
    model.cfg.metrics = {**evaluate(model), "train_seconds": round(history["seconds"], 1),
                         "final_loss": round(float(np.mean(history["loss"][-50:])), 4)}
    save_toyclip(model, args.out)
    print(json.dumps(model.cfg.metrics), "->", args.out)


if __name__ == "__main__":
    main()
