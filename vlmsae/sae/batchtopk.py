"""BatchTopK SAE (Bussmann et al. 2024), the paper's main model.

Training keeps the k*B largest pre-codes of the whole batch (flattened), so an example may use
more or fewer than k concepts while the batch averages exactly k. Inference cannot see a
batch, so it keeps every pre-code above a threshold learned in training: the running
(exponentially weighted, bias-corrected) mean of the smallest code kept in each training batch.
The threshold lives in buffers, so a `state_dict` round trip reproduces outputs exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .auxk import AuxK
from .base import SAE, LossOutput, all_gather_cat
from .sparse_ops import Selection
from .topk import auxk_config, check_k, sparse_training_loss


class BatchTopKSAE(SAE):
    def __init__(self, d: int, c: int, k: int, *, auxk: bool = True, auxk_coef: float = 1 / 32,
                 k_aux: int | None = None, dead_after: int = 100_000, threshold_decay: float = 0.99):
        check_k(k, c)
        super().__init__(d, c, dead_after=dead_after)
        self.k = int(k)
        self.threshold_decay = float(threshold_decay)
        self.auxk = AuxK(d, c, k, coef=auxk_coef, k_aux=k_aux) if auxk else None
        # threshold = threshold_sum / threshold_weight (bias-corrected exponential average).
        self.register_buffer("threshold_sum", torch.zeros((), dtype=torch.float32))
        self.register_buffer("threshold_weight", torch.zeros((), dtype=torch.float32))

    @property
    def threshold(self) -> torch.Tensor:
        return self.threshold_sum / self.threshold_weight.clamp_min(1e-12)

    def project(self, pre_codes: torch.Tensor) -> torch.Tensor:
        """Inference: keep pre-codes above the learned threshold.

        Before any training step there is no threshold yet; then each example keeps its own
        top k, so an untrained SAE still has exactly k codes per example.
        """
        if not self.threshold_weight > 0:
            values, indices = pre_codes.topk(self.k, dim=-1, sorted=False)
            return torch.zeros_like(pre_codes).scatter_(-1, indices, F.relu(values))
        return pre_codes * (pre_codes > self.threshold.to(pre_codes.dtype))

    def training_loss(self, x: torch.Tensor) -> LossOutput:
        x_centered = x - self.b_dec
        with torch.no_grad():
            dense_pre = F.linear(x_centered, self.W_enc, self.b_enc)
            flat_pre = F.relu(dense_pre).flatten()
            if self.distributed:
                kept, flat = self._select_over_ranks(flat_pre, x.shape[0])
            else:
                kept, flat = flat_pre.topk(self.k * x.shape[0], sorted=False)
            selection = Selection.from_flat(flat, x.shape[0], self.c)
            self._update_threshold(kept)
        return sparse_training_loss(self, x, x_centered, dense_pre, selection)

    def _select_over_ranks(self, flat_pre: torch.Tensor, local_batch: int):
        """BatchTopK over the global batch: the k*B largest codes of all ranks together.

        Each rank's share of them is among its own k*B largest, so gathering those candidates
        (k*B values per rank, not B*c) finds the global cut exactly. Returns the global top
        values (for the threshold, equal on every rank) and this rank's kept flat indices.
        """
        n_keep = self.k * local_batch * torch.distributed.get_world_size()
        candidates = all_gather_cat(flat_pre.topk(min(n_keep, flat_pre.numel()), sorted=False).values)
        kept = candidates.topk(n_keep, sorted=False).values
        cut = kept.min()
        # The count per rank varies, so nonzero syncs with the host: the price of ranks agreeing.
        return kept, torch.nonzero((flat_pre >= cut) & (flat_pre > 0)).squeeze(1)

    @torch.no_grad()
    def _update_threshold(self, kept: torch.Tensor) -> None:
        positive = kept.masked_fill(kept <= 0, float("inf"))
        smallest = positive.min()
        has_positive = torch.isfinite(smallest)
        decay = self.threshold_decay
        self.threshold_sum.copy_(torch.where(has_positive, decay * self.threshold_sum + (1 - decay) * smallest, self.threshold_sum))
        self.threshold_weight.copy_(torch.where(has_positive, decay * self.threshold_weight + (1 - decay), self.threshold_weight))

    def config(self) -> dict:
        return {**super().config(), "k": self.k, "threshold_decay": self.threshold_decay, **auxk_config(self.auxk)}

    def summary(self) -> dict:
        return {"threshold": float(self.threshold)}
