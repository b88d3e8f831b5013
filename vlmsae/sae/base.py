"""What every sparse autoencoder here shares.

An SAE maps an embedding x (d) to non-negative codes z (c) and back:

    pre_codes = (x - b_dec) W_enc^T + b_enc        (encoder, pre-bias b_dec)
    codes     = Pi(pre_codes)                      (the sparsifying projection of each variant)
    x_hat     = codes W_dec + b_dec                (decoder; rows of W_dec are the concepts)

The face matches the authors' toolbox `overcomplete`: `forward(x) -> (pre_codes, codes, x_hat)`,
`encode(x) -> (pre_codes, codes)`, `decode(codes)`, and `dictionary`, the (c, d) tensor of
unit-norm concepts.

Training goes through `training_loss(x)`, which each variant implements; the TopK variants use
a sparse path there (`sparse_ops.py`), so a step costs one dense matmul instead of five.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ..atomic import atomic_path, atomic_write_text

FORMAT_VERSION = 1


@dataclass
class LossOutput:
    """One training step's loss and the tensors the trainer logs (never synced here)."""

    loss: torch.Tensor
    x_hat: torch.Tensor
    l0: torch.Tensor  # mean number of non-zero codes per example
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class SAE(nn.Module):
    """Base class: parameters, initialisation, decoder constraint, dead latents, saving."""

    def __init__(self, d: int, c: int, *, dead_after: int = 100_000):
        super().__init__()
        if d <= 0 or c <= 0:
            raise ValueError(f"d and c must be positive, got d={d}, c={c}")
        self.d, self.c = int(d), int(c)
        self.dead_after = int(dead_after)
        decoder = torch.randn(c, d)
        decoder = decoder / decoder.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(decoder)
        # Encoder starts as the decoder's transpose (stored in the same (c, d) orientation).
        self.W_enc = nn.Parameter(decoder.clone())
        self.b_enc = nn.Parameter(torch.zeros(c))
        self.b_dec = nn.Parameter(torch.zeros(d))
        # Examples seen since each concept last fired; a concept is dead past `dead_after`.
        self.register_buffer("examples_since_fired", torch.zeros(c, dtype=torch.long))
        # Set by the trainer under torchrun: statistics and selections then span all ranks.
        self.distributed = False

    # ----------------------------------------------------------------- the overcomplete face
    @property
    def dictionary(self) -> torch.Tensor:
        """The (c, d) concepts: decoder rows, unit L2 norm (kept so by the trainer)."""
        return self.W_dec

    def pre_codes(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)

    def project(self, pre_codes: torch.Tensor) -> torch.Tensor:
        """The variant's sparsifying projection Pi at inference."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x)
        pre_codes = self.pre_codes(x)
        return pre_codes, self.project(pre_codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pre_codes, codes = self.encode(x)
        return pre_codes, codes, self.decode(codes)

    def training_loss(self, x: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    # ----------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_pre_bias(self, sample: torch.Tensor, method: str = "geometric_median") -> None:
        """Set b_dec to the mean or the geometric median of a data sample.

        The geometric median (Weiszfeld iterations) minimises the summed Euclidean distance to
        the sample, so a few outlying rows move it less than they move the mean; it is the
        choice of Bricken et al. 2023 and costs milliseconds on a sample of 16k rows.
        """
        sample = sample.to(self.b_dec.device, torch.float32)
        if method == "mean":
            center = sample.mean(0)
        elif method == "geometric_median":
            center = geometric_median(sample)
        elif method == "zero":
            center = torch.zeros_like(self.b_dec)
        else:
            raise ValueError(f"unknown pre-bias init {method!r}: use 'geometric_median', 'mean' or 'zero'")
        self.b_dec.copy_(center)

    # ----------------------------------------------------------------- decoder constraint
    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row (it would only change its norm)."""
        weight, grad = self.W_dec, self.W_dec.grad
        if grad is None:
            return
        # grad -= (<grad_i, w_i> / <w_i, w_i>) w_i, in one pass over the (c, d) gradient
        coefficient = torch.linalg.vecdot(grad, weight) / torch.linalg.vecdot(weight, weight).clamp_min(1e-24)
        grad.addcmul_(weight, coefficient.unsqueeze(1), value=-1.0)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ----------------------------------------------------------------- dead latents
    @torch.no_grad()
    def record_firing(self, concept_indices: torch.Tensor, code_values: torch.Tensor, batch_size: int) -> None:
        """Reset the examples-since-fired counter of every concept with a positive code in this batch.

        Counting by scatter keeps this free of host syncs (a boolean mask index would sync).
        """
        fires = torch.zeros(self.c, device=code_values.device)
        fires.index_add_(0, concept_indices.reshape(-1), (code_values.reshape(-1) > 0).float())
        if self.distributed:  # every rank counts the global batch, so the counters stay equal
            fires = all_reduce_sum(fires)
            batch_size = batch_size * torch.distributed.get_world_size()
        self.examples_since_fired.add_(batch_size).masked_fill_(fires > 0, 0)

    def dead_mask(self) -> torch.Tensor:
        return self.examples_since_fired > self.dead_after

    # ----------------------------------------------------------------- checks
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(
                f"expected inputs of shape (n, {self.d}) for this SAE (d={self.d}), got {tuple(x.shape)}"
            )

    # ----------------------------------------------------------------- saving
    def config(self) -> dict:
        """Constructor arguments; `load_sae` rebuilds the SAE from them."""
        return {"d": self.d, "c": self.c, "dead_after": self.dead_after}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `model.safetensors` + `config.json` (a Hugging Face model-repository layout)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        config = {"class": type(self).__name__, "version": FORMAT_VERSION, **self.config(), **self.summary()}
        atomic_write_text(directory / "config.json", json.dumps(config, indent=2))
        return directory

    def summary(self) -> dict:
        """Read-only facts written next to the config (not constructor arguments)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.config().items())


@torch.no_grad()
def geometric_median(points: torch.Tensor, iterations: int = 100, eps: float = 1e-8) -> torch.Tensor:
    """Weiszfeld's algorithm: argmin_m sum_i ||points_i - m||."""
    median = points.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (points - median).norm(dim=1).clamp_min(eps)
        updated = (weights[:, None] * points).sum(0) / weights.sum()
        if (updated - median).norm() < 1e-7:
            return updated
        median = updated
    return median


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a same-shaped tensor from every rank."""
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
