"""TopK SAE (Gao et al. 2024): keep the k largest pre-codes of each example, with AuxK."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .auxk import AuxK
from .base import SAE, LossOutput
from .sparse_ops import Selection, selected_pre_codes, sparse_decode


class TopKSAE(SAE):
    """Z = ReLU(TopK_k(pre_codes)) per example: at most k non-zeros, exactly k when they are positive.

    AuxK (on by default) revives dead concepts: see `auxk.py`.
    """

    def __init__(self, d: int, c: int, k: int, *, auxk: bool = True, auxk_coef: float = 1 / 32,
                 k_aux: int | None = None, dead_after: int = 100_000):
        check_k(k, c)
        super().__init__(d, c, dead_after=dead_after)
        self.k = int(k)
        self.auxk = AuxK(d, c, k, coef=auxk_coef, k_aux=k_aux) if auxk else None

    def project(self, pre_codes: torch.Tensor) -> torch.Tensor:
        values, indices = pre_codes.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre_codes).scatter_(-1, indices, F.relu(values))

    def training_loss(self, x: torch.Tensor) -> LossOutput:
        x_centered = x - self.b_dec
        with torch.no_grad():
            dense_pre = F.linear(x_centered, self.W_enc, self.b_enc)
            selection = Selection.per_example(dense_pre.topk(self.k, dim=-1, sorted=False).indices, self.c)
        return sparse_training_loss(self, x, x_centered, dense_pre, selection)

    def config(self) -> dict:
        return {**super().config(), "k": self.k, **auxk_config(self.auxk)}


def check_k(k: int, c: int) -> None:
    if not 0 < k < c:
        raise ValueError(f"k (non-zeros per example) must satisfy 0 < k < c, got k={k}, c={c}: lower k or raise c")


def auxk_config(auxk: AuxK | None) -> dict:
    if auxk is None:
        return {"auxk": False}
    return {"auxk": True, "auxk_coef": auxk.coef, "k_aux": auxk.k_aux}


def sparse_training_loss(sae: SAE, x, x_centered, dense_pre, selection: Selection) -> LossOutput:
    """Squared error per example through the sparse path, plus AuxK when the SAE has it and it is active."""
    values = F.relu(selected_pre_codes(x_centered, sae.W_enc, sae.b_enc, dense_pre, selection))
    x_hat = sparse_decode(values, sae.W_dec, selection) + sae.b_dec
    sae.record_firing(selection.cols, values.detach(), x.shape[0])
    mse = (x - x_hat).pow(2).sum(-1).mean()
    loss = mse
    parts = {"mse": mse}
    if sae.auxk is not None and sae.auxk.active:
        aux = sae.auxk.loss(sae, x_centered, dense_pre, (x - x_hat).detach(), sae.dead_mask())
        loss = loss + sae.auxk.coef * aux
        parts["auxk"] = aux
    l0 = (values > 0).sum() / x.shape[0]
    return LossOutput(loss=loss, x_hat=x_hat, l0=l0, parts=parts)
