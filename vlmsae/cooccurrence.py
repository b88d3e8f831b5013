"""Co-occurrence of sparse codes on CPU: out += Z_img^T Z_txt with a compiled Gustavson kernel.

The bridge matrix needs C = Z_img^T Z_txt for codes with k non-zeros in c columns. C has n*k^2
non-zero products but is nearly dense (c^2 cells), so a sparse-by-sparse library product spends
its time building and merging a sparse result. Here C accumulates straight into a dense (c, c)
float64 array: image concept i's row is the sum, over the pairs r where i fires, of
z_img[r, i] * z_txt[r, :]. Each row is owned by one thread (no write conflicts) and stays in
cache while the pairs that touch it stream past. Work: n*k^2 multiply-adds
(1e8 at n=100k, k=32), against n*c^2 for the dense product.

numba compiles the two kernels on first use and caches the machine code next to this file, so a
new process pays the compilation (about a second) once per machine.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _by_column(n_cols, row_ptr, cols, vals):
    """CSR (row_ptr, cols, vals) of an (n, n_cols) matrix -> its CSC (col_ptr, rows, vals), by
    counting sort: rows stay in increasing order inside each column."""
    col_ptr = np.zeros(n_cols + 1, np.int64)
    for p in range(cols.shape[0]):
        col_ptr[cols[p] + 1] += 1
    for j in range(n_cols):
        col_ptr[j + 1] += col_ptr[j]
    fill = col_ptr[:-1].copy()
    rows = np.empty(cols.shape[0], np.int32)
    out_vals = np.empty(cols.shape[0], vals.dtype)
    for r in range(row_ptr.shape[0] - 1):
        for p in range(row_ptr[r], row_ptr[r + 1]):
            dest = fill[cols[p]]
            rows[dest] = r
            out_vals[dest] = vals[p]
            fill[cols[p]] += 1
    return col_ptr, rows, out_vals


@numba.njit(cache=True, nogil=True)
def _accumulate(out, first, last, img_col_ptr, img_rows, img_vals, txt_row_ptr, txt_cols, txt_vals):
    for i in range(first, last):
        for p in range(img_col_ptr[i], img_col_ptr[i + 1]):
            r = img_rows[p]
            weight = np.float64(img_vals[p])
            for q in range(txt_row_ptr[r], txt_row_ptr[r + 1]):
                out[i, txt_cols[q]] += weight * txt_vals[q]


def add_cooccurrence(out: np.ndarray, image_csr: tuple, text_csr: tuple, threads: int | None = None) -> None:
    """out (c, c) float64 += Z_img^T Z_txt, both given as CSR triples (row_ptr, cols, vals) of
    (n, c) matrices with the same n. Row r of each is one matched pair.

    threads: Python threads (default ``torch.get_num_threads()``), each owning a block of rows of
    out with an equal share of the image codes. The kernel releases the GIL; plain threads
    rather than numba's parallel layer, which shares OpenMP with torch and resets its thread
    count.
    """
    if out.dtype != np.float64 or not out.flags.c_contiguous or out.ndim != 2 or out.shape[0] != out.shape[1]:
        raise ValueError("out must be a C-contiguous square float64 array")
    image_ptr, image_cols, image_vals = (np.ascontiguousarray(a) for a in image_csr)
    text_ptr, text_cols, text_vals = (np.ascontiguousarray(a) for a in text_csr)
    if image_ptr.shape != text_ptr.shape:
        raise ValueError(f"Z_img has {image_ptr.shape[0] - 1} rows but Z_txt has {text_ptr.shape[0] - 1}")
    if image_ptr.shape[0] > 2**31:
        raise ValueError("a batch of over 2**31 rows: pass the codes in smaller batches")
    # 32-bit indices: half the memory traffic of the gathers that bound the kernel
    text_cols = text_cols.astype(np.int32, copy=False)
    col_ptr, rows, vals = _by_column(out.shape[0], image_ptr, image_cols, image_vals)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    # block boundaries at equal shares of the image codes (concept frequencies are far from even)
    bounds = np.searchsorted(col_ptr, np.linspace(0, col_ptr[-1], max(1, threads) + 1), side="left")
    bounds[0], bounds[-1] = 0, out.shape[0]
    blocks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    run = lambda block: _accumulate(out, *block, col_ptr, rows, vals, text_ptr, text_cols, text_vals)
    if len(blocks) == 1:
        run(blocks[0])
        return
    with ThreadPoolExecutor(len(blocks)) as pool:
        list(pool.map(run, blocks))
