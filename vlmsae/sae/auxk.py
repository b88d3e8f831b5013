"""AuxK (Gao et al. 2024): an auxiliary loss that makes dead concepts useful again.

A concept is dead after `dead_after` training examples without firing. AuxK takes the k_aux
largest pre-codes among the dead concepts, decodes them without b_dec, and asks them to
reconstruct the detached residual e = x - x_hat of the main path:

    aux = min(n_dead / k_aux, 1) * mean_n ||e - z_aux W_dec||^2,     loss += coef * aux

with k_aux = d / 2 and coef = 1/32 by default. The scale goes to 0 smoothly as concepts revive.

Whether any concept is dead is a host-side flag (`active`) refreshed by the trainer at its
logging steps, where it synchronises anyway; a dense k_aux selection every step would cost
more than the main path when nothing is dead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sparse_ops import Selection, selected_pre_codes, sparse_decode


class AuxK:
    def __init__(self, d: int, c: int, k: int, *, coef: float = 1 / 32, k_aux: int | None = None):
        self.coef = float(coef)
        self.k_aux = int(k_aux) if k_aux is not None else max(1, min(d // 2, c - k))
        self.active = False

    def loss(self, sae, x_centered, dense_pre, residual, dead) -> torch.Tensor:
        """`dense_pre`: the main path's pre-codes (no autograd); `dead`: (c,) bool."""
        with torch.no_grad():
            indices = dense_pre.masked_fill(~dead, float("-inf")).topk(self.k_aux, dim=-1, sorted=False).indices
            selection = Selection.per_example(indices, sae.c)
        values = selected_pre_codes(x_centered, sae.W_enc, sae.b_enc, dense_pre, selection)
        # with fewer dead concepts than k_aux, live ones fill the top-k: mask them out
        values = F.relu(values) * dead[selection.cols]
        reconstruction = sparse_decode(values, sae.W_dec, selection)
        scale = (dead.sum().float() / self.k_aux).clamp(max=1.0)
        return scale * (residual - reconstruction).pow(2).sum(-1).mean()
