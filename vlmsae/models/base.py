"""The one face every vision-language model shows to vlmsae, and the batching it shares.

A model maps images and texts into one shared space of dimension ``dim``:
``encode_images(list of PIL images) -> (n, dim)`` and ``encode_texts(list of str) -> (n, dim)``,
float32 tensors on the model's device, *not* normalised (``vlmsae.embed`` normalises when asked).

Adapters split each side in two steps so extraction can pipeline them:
``preprocess_images`` / ``tokenize`` run on the CPU (thread-safe, in a background loader) and
return a dict of CPU tensors with the batch on dim 0; ``_forward_images`` / ``_forward_texts`` run
the towers on ``device``. ``embed_image_inputs`` / ``embed_text_inputs`` add what every backend
needs around the forward: device transfer, ``torch.inference_mode`` and, on CUDA, bf16 autocast
(fp16 where bf16 is unsupported); the output is always float32.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Mapping

import torch

#: precision names accepted by every adapter
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device``; None means plain float32.

    ``auto`` is bf16 on CUDA devices that support it, else fp16 on CUDA, and float32 on CPU (CPU
    autocast is slower than float32 matmuls for these small towers and changes results).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(inputs: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    # non_blocking: a pinned CPU batch is copied while the previous forward still runs
    return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}


class EmbeddingModel:
    """Base adapter: subclasses set ``name``, ``dim``, ``device``, ``precision`` and the four hooks."""

    name: str
    dim: int
    device: torch.device
    precision: str = "auto"

    # --- hooks of a backend -------------------------------------------------------------------
    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _forward_images(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _forward_texts(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def probe_dim(self) -> int:
        """The shared dimension, read off one tiny text forward (works for every tower layout)."""
        return int(self.embed_text_inputs(self.tokenize(["a"])).shape[-1])

    def _run(self, forward, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        dtype = autocast_dtype(self.device, self.precision)
        cast = (torch.autocast(self.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            out = forward(to_device(inputs, self.device))
        return out.float()

    def embed_image_inputs(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(n, dim) float32 image embeddings from ``preprocess_images`` output."""
        return self._run(self._forward_images, inputs)

    def embed_text_inputs(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(n, dim) float32 text embeddings from ``tokenize`` output."""
        return self._run(self._forward_texts, inputs)

    def encode_images(self, images: Iterable, batch_size: int = 64) -> torch.Tensor:
        images = list(images)
        parts = [self.embed_image_inputs(self.preprocess_images(images[i:i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.dim, device=self.device)

    def encode_texts(self, texts: Iterable[str], batch_size: int = 256) -> torch.Tensor:
        texts = [str(t) for t in texts]
        parts = [self.embed_text_inputs(self.tokenize(texts[i:i + batch_size]))
                 for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.dim, device=self.device)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={str(self.device)!r})"


@contextlib.contextmanager
def hub_offline():
    """Make every Hugging Face Hub call inside the block local-only (``HF_HUB_OFFLINE=1``).

    The environment variable is read once at import, so it is the module constant that is
    switched; libraries that call the hub indirectly (open_clip's tokenizers) then read the local
    cache or fail fast instead of reaching for the network.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub library: nothing can reach the hub anyway
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hf_cache_dir(cache_dir: str | None = None) -> str:
    """The Hugging Face Hub cache folder that a local-only load reads."""
    if cache_dir:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
