"""SAE training throughput: vlmsae against the authors' toolbox `overcomplete`, in one process.

    python benchmarks/train_throughput.py [--d 512 --c 4096 --k 32 --batch 1024 --steps 20 --device cpu]

Prints, for TopK and BatchTopK:
  1. samples/s of one training step (forward, loss, backward, clipping, AdamW step) for each
     library and the ratio vlmsae / overcomplete (target >= 1.5x);
  2. vlmsae's step time against the time of the step's two bare dense matmuls (x W_enc^T and
     Z W_dec), a roofline for a dense implementation;
  3. R2 (per-dimension mean) of both after the same number of steps on planted sparse data,
     measured by the same independent formula;
  4. `train_many`: 5 seeds of BatchTopK in one pass against 5 separate `train_sae` runs.
overcomplete is installed here on demand (it is not a vlmsae dependency); it imports torchvision.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time

import torch

from vlmsae.sae import BatchTopKSAE, TopKSAE
from vlmsae.synthetic import sparse_dictionary_data
from vlmsae.train import make_optimizer, train_many, train_sae


def ensure_overcomplete():
    # overcomplete 0.3.0 calls matplotlib.cm.get_cmap at import, which matplotlib 3.9 removed;
    # give it the same function under its old name (benchmark only, nothing of vlmsae relies on it).
    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap
    try:
        return importlib.import_module("overcomplete")
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "overcomplete"])
        return importlib.import_module("overcomplete")


def median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def vlmsae_step(sae, optimizer, x, amp):
    def step():
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = sae.training_loss(x)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        sae.normalize_decoder()
    return step


def overcomplete_step(model, optimizer, x, amp):
    from overcomplete.sae.losses import mse_l1

    def step():
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=amp):
            pre_codes, codes, x_hat = model(x)
            loss = mse_l1(x, x_hat, pre_codes, codes, model.get_dictionary(), penalty=0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def build(kind: str, d: int, c: int, k: int, batch: int, device):
    """The same SAE in both libraries; overcomplete's BatchTopK takes top_k = k * batch."""
    import overcomplete.sae as oc

    ours = (TopKSAE if kind == "TopK" else BatchTopKSAE)(d, c, k).to(device)
    top_k = k if kind == "TopK" else k * batch
    theirs = (oc.TopKSAE if kind == "TopK" else oc.BatchTopKSAE)(d, c, top_k=top_k, device=str(device))
    return ours, theirs


def per_dim_r2(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--c", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--r2-steps", type=int, default=150)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    ensure_overcomplete()
    torch.manual_seed(0)
    print(f"device={device} threads={torch.get_num_threads()} d={args.d} c={args.c} k={args.k} batch={args.batch} amp={amp}")

    x = torch.randn(args.batch, args.d, device=device)
    x = x / x.norm(dim=1, keepdim=True)
    W = torch.randn(args.c, args.d, device=device)
    Z = torch.zeros(args.batch, args.c, device=device)
    dtype = torch.bfloat16 if amp else torch.float32
    xb, Wb, Zb = x.to(dtype), W.to(dtype), Z.to(dtype)
    matmuls = median_seconds(lambda: (xb @ Wb.T, Zb @ Wb), args.repeats, device)

    planted = sparse_dictionary_data(n=16 * args.batch, d=args.d, c=args.c // 4, k=args.k // 4, noise=0.05, seed=0)
    data = planted.data.to(device)
    data = data / data.norm(dim=1, keepdim=True)

    print(f"\n{'model':10s} {'vlmsae samples/s':>17s} {'overcomplete':>13s} {'ratio':>7s} {'step / 2 matmuls':>17s} "
          f"{'R2 vlmsae':>10s} {'R2 overcomplete':>16s}")
    for kind in ("TopK", "BatchTopK"):
        ours, theirs = build(kind, args.d, args.c, args.k, args.batch, device)
        ours_step = vlmsae_step(ours, make_optimizer(ours, 5e-4, 0.0, device), x, amp)
        theirs_step = overcomplete_step(theirs, torch.optim.AdamW(theirs.parameters(), lr=5e-4, fused=True), x, amp)
        ours_seconds = median_seconds(ours_step, args.repeats, device)
        theirs_seconds = median_seconds(theirs_step, args.repeats, device)

        # The same number of steps over the same planted data, same learning rate.
        ours, theirs = build(kind, args.d, args.c, args.k, args.batch, device)
        ours.init_pre_bias(data[:4096], "mean")
        ours_opt = make_optimizer(ours, 1e-3, 0.0, device)
        theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-3, fused=True)
        for step in range(args.r2_steps):
            batch = data[(step * args.batch) % len(data):][: args.batch]
            vlmsae_step(ours, ours_opt, batch, amp)()
            overcomplete_step(theirs, theirs_opt, batch, amp)()
        ours.eval(), theirs.eval()
        with torch.no_grad():
            r2_ours = per_dim_r2(data, ours(data)[2])
            r2_theirs = per_dim_r2(data, theirs(data)[2])
        print(f"{kind:10s} {args.batch / ours_seconds:17.0f} {args.batch / theirs_seconds:13.0f} "
              f"{theirs_seconds / ours_seconds:6.2f}x {ours_seconds / matmuls:16.2f}x {r2_ours:10.3f} {r2_theirs:16.3f}")
    print(f"\ntwo bare matmuls: {matmuls * 1e3:.1f} ms per step")
    compare_train_many(data, args, device)


def compare_train_many(data, args, device, seeds: int = 5, steps: int = 10):
    """5 seeds in one pass (each batch read once) against 5 separate runs, same options."""
    def fresh():
        saes = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            saes.append(BatchTopKSAE(args.d, args.c, args.k))
        return saes

    options = dict(steps=steps, batch_size=args.batch, device=device, progress=False, check_finite=False)
    start = time.perf_counter()
    for sae in fresh():
        train_sae(sae, data, **options)
    separate = time.perf_counter() - start
    start = time.perf_counter()
    train_many(fresh(), data, **options)
    together = time.perf_counter() - start
    print(f"train_many, {seeds} BatchTopK seeds x {steps} steps: separate {separate:.1f} s, one pass "
          f"{together:.1f} s, ratio {separate / together:.2f}x")


if __name__ == "__main__":
    main()
