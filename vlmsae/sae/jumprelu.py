"""JumpReLU SAE (Rajamanoharan et al. 2024): z_i = pre_i * H(pre_i - theta_i).

Sparsity comes from a per-concept threshold theta and an L0 penalty on the step H. Both are
piecewise constant in theta, so training uses straight-through pseudo-derivatives with a
rectangle kernel K(u) = 1[|u| < 1/2] of bandwidth eps:

    d JumpReLU / d theta = -(theta / eps) K((pre - theta) / eps)
    d H(pre - theta) / d theta = -(1 / eps) K((pre - theta) / eps)

The threshold is stored as `log_threshold` (float32 even under autocast), so it stays positive
and codes stay non-negative. The loss is  mean_n ||x - x_hat||^2 + sparsity * mean_n ||z||_0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import SAE, LossOutput


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad_out):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_out * (pre > threshold)
        grad_threshold = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad_out
        return grad_pre, grad_threshold.sum_to_size(threshold.shape), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad_out
        return None, grad_threshold.sum_to_size(threshold.shape), None


class JumpReLUSAE(SAE):
    def __init__(self, d: int, c: int, *, sparsity: float = 1e-3, bandwidth: float = 1e-3,
                 init_threshold: float = 1e-3, dead_after: int = 100_000):
        super().__init__(d, c, dead_after=dead_after)
        if sparsity < 0 or bandwidth <= 0 or init_threshold <= 0:
            raise ValueError("JumpReLU needs sparsity >= 0, bandwidth > 0 and init_threshold > 0")
        self.sparsity = float(sparsity)
        self.bandwidth = float(bandwidth)
        self.init_threshold = float(init_threshold)
        self.log_threshold = nn.Parameter(torch.full((c,), math.log(init_threshold), dtype=torch.float32))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.float().exp()

    def project(self, pre_codes: torch.Tensor) -> torch.Tensor:
        return _JumpReLU.apply(pre_codes.float(), self.threshold, self.bandwidth)

    def training_loss(self, x: torch.Tensor) -> LossOutput:
        pre = F.linear(x - self.b_dec, self.W_enc, self.b_enc).float()
        threshold = self.threshold
        codes = _JumpReLU.apply(pre, threshold, self.bandwidth)
        x_hat = self.decode(codes)
        mse = (x - x_hat).pow(2).sum(-1).mean()
        l0 = _Step.apply(pre, threshold, self.bandwidth).sum(-1).mean()
        concepts = torch.arange(self.c, device=x.device).expand_as(codes)
        self.record_firing(concepts, codes.detach(), x.shape[0])
        return LossOutput(loss=mse + self.sparsity * l0, x_hat=x_hat, l0=l0.detach(), parts={"mse": mse})

    def config(self) -> dict:
        return {**super().config(), "sparsity": self.sparsity, "bandwidth": self.bandwidth,
                "init_threshold": self.init_threshold}
