"""GPU measurements for `gpu_check.sh`: one table of SAE training and extraction throughput.

    python benchmarks/gpu_throughput.py

- SAE training samples/s at d=768, c=8192 and 32768, k=32, batch 4096, bf16 autocast, for
  vlmsae's TopK / BatchTopK and for overcomplete's (same process, same step definition);
- extraction embeddings/s of a SigLIP-base-architecture model with random weights
  (transformers `SiglipModel(SiglipConfig())`: real size, no download), images and texts.
"""

from __future__ import annotations

import time

import torch

from train_throughput import build, ensure_overcomplete, median_seconds, overcomplete_step, vlmsae_step
from vlmsae.train import make_optimizer


def sae_rows(device):
    rows = []
    x = torch.randn(4096, 768, device=device)
    x = x / x.norm(dim=1, keepdim=True)
    for c in (8192, 32768):
        for kind in ("TopK", "BatchTopK"):
            ours, theirs = build(kind, 768, c, 32, 4096, device)
            ours_s = median_seconds(vlmsae_step(ours, make_optimizer(ours, 5e-4, 0.0, device), x, True), 10, device)
            theirs_s = median_seconds(overcomplete_step(theirs, torch.optim.AdamW(theirs.parameters(), lr=5e-4, fused=True), x, True), 10, device)
            rows.append((f"{kind} c={c}", 4096 / ours_s, 4096 / theirs_s))
            del ours, theirs
            torch.cuda.empty_cache()
    return rows


@torch.inference_mode()
def extraction_rows(device):
    from transformers import SiglipConfig, SiglipModel

    model = SiglipModel(SiglipConfig()).to(device).eval()
    images = torch.randn(256, 3, 224, 224, device=device)
    tokens = torch.randint(0, model.config.text_config.vocab_size, (1024, 64), device=device)

    def embed_images():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.get_image_features(pixel_values=images)

    def embed_texts():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.get_text_features(input_ids=tokens)

    return [("SigLIP-base images", 256 / median_seconds(embed_images, 5, device), None),
            ("SigLIP-base texts", 1024 / median_seconds(embed_texts, 5, device), None)]


def main():
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU machine (see gpu_check.sh)")
    device = torch.device("cuda")
    ensure_overcomplete()
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    started = time.perf_counter()
    rows = sae_rows(device) + extraction_rows(device)
    print(f"\n{'what':24s} {'vlmsae /s':>12s} {'overcomplete /s':>16s} {'ratio':>7s}")
    for name, ours, theirs in rows:
        ratio = f"{ours / theirs:6.2f}x" if theirs else "      -"
        theirs_text = f"{theirs:16.0f}" if theirs else f"{'-':>16s}"
        print(f"{name:24s} {ours:12.0f} {theirs_text} {ratio}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
