"""SAE codes of a whole embedding set, kept sparse.

Codes are k-sparse (k of c non-zero), so n=600k rows of c=8192 concepts take n*k values in
CSR form instead of 20 GB dense. `vlmsae.metrics` takes these CSR tensors directly.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm


@torch.no_grad()  # not inference_mode: callers may modify the result
def encode_codes(sae, rows, *, batch_size: int = 8192, device: str | torch.device = "cpu",
                 progress: bool = False) -> torch.Tensor:
    """Codes of every row of `rows` ((n, d) array, memmap or tensor) as an (n, c) sparse CSR tensor on CPU."""
    device = torch.device(device)
    sae = sae.to(device).eval()
    crow, cols, values = [torch.zeros(1, dtype=torch.long)], [], []
    seen = 0
    for begin in tqdm(range(0, len(rows), batch_size), disable=not progress, desc="codes"):
        batch = rows[begin : begin + batch_size]
        batch = batch if torch.is_tensor(batch) else torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        codes = sae.encode(batch.to(device).float())[1].float().cpu().to_sparse_csr()
        crow.append(codes.crow_indices()[1:] + seen)
        cols.append(codes.col_indices())
        values.append(codes.values())
        seen += codes.values().numel()
    n = len(rows)
    if n == 0:
        return torch.sparse_csr_tensor(crow[0], torch.zeros(0, dtype=torch.long), torch.zeros(0), (0, sae.c))
    return torch.sparse_csr_tensor(torch.cat(crow), torch.cat(cols), torch.cat(values), (n, sae.c))
