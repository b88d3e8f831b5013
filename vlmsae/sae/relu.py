"""The classic SAE (Bricken et al. 2023): z = ReLU(pre), loss = ||x - x_hat||^2 + l1 * sum_i z_i ||D_i||.

Decoder rows are kept at unit norm by the trainer, so the norm factor is 1 after every step;
it stays in the loss so the penalty cannot be dodged by shrinking codes and growing rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import SAE, LossOutput


class ReLUSAE(SAE):
    def __init__(self, d: int, c: int, *, l1: float = 1e-3, dead_after: int = 100_000):
        super().__init__(d, c, dead_after=dead_after)
        if l1 < 0:
            raise ValueError(f"l1 must be >= 0, got {l1}")
        self.l1 = float(l1)

    def project(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return F.relu(pre_codes)

    def training_loss(self, x: torch.Tensor) -> LossOutput:
        codes = F.relu(F.linear(x - self.b_dec, self.W_enc, self.b_enc))
        x_hat = self.decode(codes)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        l1 = (codes * self.W_dec.norm(dim=1)).sum(-1).mean()
        concepts = torch.arange(self.c, device=x.device).expand_as(codes)
        self.record_firing(concepts, codes.detach(), x.shape[0])
        l0 = (codes > 0).sum() / x.shape[0]
        return LossOutput(loss=mse + self.l1 * l1, x_hat=x_hat, l0=l0, parts={"mse": mse, "l1": l1})

    def config(self) -> dict:
        return {**super().config(), "l1": self.l1}
