import numpy as np
import torch

from vlmsae.codes import encode_codes
from vlmsae.sae import TopKSAE


def test_sparse_codes_equal_dense_encode_across_batches():
    torch.manual_seed(0)
    sae = TopKSAE(12, 40, 3)
    rows = np.random.default_rng(0).normal(size=(101, 12)).astype(np.float32)
    codes = encode_codes(sae, rows, batch_size=17)
    assert codes.layout == torch.sparse_csr and codes.shape == (101, 40)
    dense = sae.encode(torch.from_numpy(rows))[1]
    torch.testing.assert_close(codes.to_dense(), dense)
    assert codes.values().numel() == int((dense > 0).sum())
