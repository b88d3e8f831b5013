"""Speed of the metrics that touch c x c matrices: the bridge matrix and stability.

    .venv/bin/python benchmarks/metrics_speed.py                  # bridge at n=100k, c=4096, k=32; stability at c=4096, 8192
    .venv/bin/python benchmarks/metrics_speed.py --large          # also the sparse bridge at n=600k, c=8192 (no dense run)
    .venv/bin/python benchmarks/metrics_speed.py --device cuda

Bridge: `metrics.bridge_matrix` (on CPU the compiled sparse kernel of `vlmsae.cooccurrence`)
against the dense formula Z_img^T Z_txt / n * (D D^T) computed with dense matmuls over row
chunks, on the same random top-k codes, in the same process; prints both times, their ratio and the largest
difference. Stability: seconds of `metrics.stability` (cosines + Hungarian matching) on two
runs' worth of dictionaries, the second a noisy permutation of the first plus fresh rows.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from vlmsae import metrics

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def random_topk_codes(n: int, c: int, k: int, generator: torch.Generator, device) -> torch.Tensor:
    """(n, c) sparse CSR codes with k distinct concepts per row and Uniform(0, 1) values.

    Row r takes one random concept from each of k equal strata of the c concepts: distinct by
    construction, every concept equally likely, and no (n, c) buffer to draw from.
    """
    stratum = c // k
    indices = torch.arange(k) * stratum + torch.randint(0, stratum, (n, k), generator=generator)
    values = torch.rand(n, k, generator=generator)
    crow = torch.arange(0, n * k + 1, k)
    return torch.sparse_csr_tensor(crow, indices.reshape(-1), values.reshape(-1), (n, c), check_invariants=False).to(device)


def dense_bridge(Z_img: torch.Tensor, Z_txt: torch.Tensor, D: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The textbook formula with dense matmuls, row chunk by row chunk (n c^2 multiply-adds)."""
    n, c = Z_img.shape
    total = torch.zeros(c, c, device=D.device)
    image_rows, text_rows = Z_img.to_sparse_coo().coalesce(), Z_txt.to_sparse_coo().coalesce()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dense_img = image_rows.index_select(0, torch.arange(start, stop, device=D.device)).to_dense()
        dense_txt = text_rows.index_select(0, torch.arange(start, stop, device=D.device)).to_dense()
        total.addmm_(dense_img.T, dense_txt)
    return total.double() / n * (D.double() @ D.double().T)


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def bench_bridge(n: int, c: int, k: int, d: int, device, dense: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    Z_img, Z_txt = random_topk_codes(n, c, k, generator, device), random_topk_codes(n, c, k, generator, device)
    D = torch.nn.functional.normalize(torch.randn(c, d, generator=generator), dim=1).to(device)
    sparse, sparse_s = timed(lambda: metrics.bridge_matrix(Z_img, Z_txt, D))
    print(f"bridge n={n} c={c} k={k}: sparse {sparse_s:.2f} s", flush=True)
    if dense:
        reference, dense_s = timed(lambda: dense_bridge(Z_img, Z_txt, D))
        difference = (torch.from_numpy(sparse) - reference.cpu()).abs().max().item()
        print(f"bridge n={n} c={c} k={k}: dense {dense_s:.2f} s, sparse/dense speed-up {dense_s / sparse_s:.1f}x, "
              f"max |difference| {difference:.2e}", flush=True)


def bench_stability(c: int, d: int, device) -> None:
    generator = torch.Generator().manual_seed(1)
    D1 = torch.nn.functional.normalize(torch.randn(c, d, generator=generator), dim=1)
    # A second "run": half the concepts recovered with noise, in another order, half new.
    D2 = torch.cat([D1[: c // 2] + 0.3 * torch.randn(c // 2, d, generator=generator) / d**0.5, torch.randn(c - c // 2, d, generator=generator)])
    D2 = D2[torch.randperm(c, generator=generator)]
    value, seconds = timed(lambda: metrics.stability(D1.to(device), D2.to(device)))
    print(f"stability c={c} d={d}: {seconds:.1f} s (value {value:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--c", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--stability-sizes", type=int, nargs="*", default=[4096, 8192])
    parser.add_argument("--large", action="store_true", help="also the sparse bridge at n=600k, c=8192, k=32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}", flush=True)
    if device.type == "cpu":
        # a new process loads numba and the kernel's cached machine code (compiling it on a
        # machine's first run): shown apart, then the steady cost per call is measured
        tiny = random_topk_codes(64, 64, 4, torch.Generator().manual_seed(2), device)
        _, first_s = timed(lambda: metrics.bridge_matrix(tiny, tiny, torch.eye(64)))
        print(f"bridge: first call in this process (loads the compiled kernel) {first_s:.2f} s", flush=True)
    bench_bridge(args.n, args.c, args.k, args.d, device, dense=True)
    if args.large:
        bench_bridge(600_000, 8192, args.k, args.d, device, dense=False)
    for c in args.stability_sizes:
        bench_stability(c, args.d, device)


if __name__ == "__main__":
    main()
