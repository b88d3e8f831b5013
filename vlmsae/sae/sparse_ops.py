"""Sparse encoder and decoder steps for the TopK family, with hand-written backward passes.

After the top-k selection only n*k of the n*c codes are non-zero, yet autograd on dense codes
pays five dense (n, c, d) matmuls per step. Here the selection is a `Selection` (a CSR pattern:
example-major for the forward pass, concept-major for the weight gradients), and every step
after the one dense forward matmul costs O(n k d):

    encoder values   v[e, j] = pre[e, col_j]                   (gathered, no recompute)
      dv -> dx_c     embedding_bag(cols, W_enc, dv)
      dv -> dW_enc   S^T x_c, S the (n, c) sparse matrix of dv  (CSR matmul)
    decoder          x_hat = embedding_bag(cols, W_dec, v)
      dx_hat -> dv   (dx_hat W_dec^T) sampled at the pattern   (sampled_addmm)
      dx_hat -> dW   S^T dx_hat, S the sparse matrix of v      (CSR matmul)

The sparse kernels run in float32 (they are memory-bound, and not every sparse kernel takes
bf16), so these functions are safe under bf16 autocast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


@dataclass
class Selection:
    """Which (example, concept) codes are kept: entry j is (rows[j], cols[j]).

    Entries are grouped by example (rows ascending); `offsets[e]` is where example e starts,
    with a final entry equal to the number of entries (CSR `crow_indices`).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    offsets: torch.Tensor
    n_examples: int
    n_concepts: int

    @classmethod
    def per_example(cls, indices: torch.Tensor, n_concepts: int) -> "Selection":
        """From (n, k) top-k indices: k entries per example."""
        indices = indices.sort(dim=1).values  # CSR wants ascending columns within a row
        n, k = indices.shape
        device = indices.device
        rows = torch.arange(n, device=device).repeat_interleave(k)
        offsets = torch.arange(0, n * k + 1, k, device=device)
        return cls(rows, indices.reshape(-1), offsets, n, n_concepts)

    @classmethod
    def from_flat(cls, flat_indices: torch.Tensor, n_examples: int, n_concepts: int) -> "Selection":
        """From indices into the flattened (n, c) batch, any number per example (BatchTopK)."""
        flat_indices = flat_indices[argsort_ints(flat_indices)]  # example-major, then concept: CSR order
        rows, cols = flat_indices // n_concepts, flat_indices % n_concepts
        boundaries = torch.arange(n_examples + 1, device=flat_indices.device)
        offsets = torch.searchsorted(rows, boundaries)
        return cls(rows, cols, offsets, n_examples, n_concepts)

    @cached_property
    def by_concept(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(order, example index, crow) of the concept-major CSR of the same pattern."""
        order = argsort_ints(self.cols)
        # scatter_add, not bincount: bincount reads the maximum back to the host on CUDA
        counts = torch.zeros(self.n_concepts + 1, dtype=torch.long, device=self.cols.device)
        counts.scatter_add_(0, self.cols + 1, torch.ones_like(self.cols))
        return order, self.rows[order], counts.cumsum(0)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The (n, c) sparse CSR matrix with `values` at the pattern."""
        return torch.sparse_csr_tensor(self.offsets, self.cols, values, (self.n_examples, self.n_concepts), check_invariants=False)

    def transposed_matmul(self, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """S^T @ dense for S = matrix(values): (c, n) x (n, d) -> (c, d), in O(nnz d)."""
        order, example, crow = self.by_concept
        transposed = torch.sparse_csr_tensor(crow, example, values[order], (self.n_concepts, self.n_examples), check_invariants=False)
        return transposed @ dense

    def sampled_matmul(self, left: torch.Tensor, right_t: torch.Tensor) -> torch.Tensor:
        """(left @ right_t^T) at the pattern only, one value per entry."""
        pattern = self.matrix(torch.zeros(self.cols.shape[0], dtype=left.dtype, device=left.device))
        return torch.sparse.sampled_addmm(pattern, left, right_t.T, beta=0.0).values()

    def bag(self, weight: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """sum_j values_j * weight[cols_j] per example."""
        return F.embedding_bag(self.cols, weight, self.offsets[:-1], mode="sum", per_sample_weights=values)

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.n_examples, self.n_concepts, dtype=values.dtype, device=values.device)
        out[self.rows, self.cols] = values
        return out


def argsort_ints(values: torch.Tensor) -> torch.Tensor:
    """Stable argsort of integer indices.

    On CPU the keys go through float64 (exact below 2**53): torch's multi-threaded int64 CPU sort
    took 245 ms for 32k keys on our 2-core machine under load, float64 2.6 ms.
    """
    keys = values if values.is_cuda else values.double()
    return keys.argsort(stable=True)


class _SelectedPreCodes(torch.autograd.Function):
    """v = pre[rows, cols], with pre = x_c W_enc^T + b_enc computed beforehand without autograd."""

    @staticmethod
    def forward(ctx, x_centered, W_enc, b_enc, values, selection):
        ctx.selection = selection
        ctx.save_for_backward(x_centered, W_enc)
        return values

    @staticmethod
    def backward(ctx, grad_values):
        x_centered, W_enc = ctx.saved_tensors
        selection = ctx.selection
        grad_values = grad_values.float().contiguous()
        grad_x = selection.bag(W_enc.float(), grad_values).to(x_centered.dtype)
        grad_W = selection.transposed_matmul(grad_values, x_centered.float()).to(W_enc.dtype)
        grad_b = torch.zeros(selection.n_concepts, device=grad_values.device).index_add_(0, selection.cols, grad_values)
        return grad_x, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """x_hat (without b_dec) = sum_j v_j W_dec[cols_j] per example."""

    @staticmethod
    def forward(ctx, values, W_dec, selection):
        values, W_dec_f = values.float().contiguous(), W_dec.float()
        ctx.selection = selection
        ctx.save_for_backward(values, W_dec_f)
        ctx.weight_dtype = W_dec.dtype
        return selection.bag(W_dec_f, values)

    @staticmethod
    def backward(ctx, grad_out):
        values, W_dec = ctx.saved_tensors
        selection = ctx.selection
        grad_out = grad_out.float().contiguous()
        grad_values = selection.sampled_matmul(grad_out, W_dec)
        grad_W = selection.transposed_matmul(values, grad_out).to(ctx.weight_dtype)
        return grad_values, grad_W, None


def selected_pre_codes(x_centered, W_enc, b_enc, pre_codes_no_grad, selection: Selection) -> torch.Tensor:
    """Pre-codes at the selection, differentiable in x_centered, W_enc and b_enc."""
    values = pre_codes_no_grad[selection.rows, selection.cols].float()
    return _SelectedPreCodes.apply(x_centered, W_enc, b_enc, values, selection)


def sparse_decode(values: torch.Tensor, W_dec: torch.Tensor, selection: Selection) -> torch.Tensor:
    """Decode sparse codes without b_dec, differentiable in values and W_dec."""
    return _SparseDecode.apply(values, W_dec, selection)
