"""Extraction throughput: embeddings/s of ``vlmsae.embed.extract`` and where the time goes.

Two models:

* ``clip-base``: a transformers CLIPModel at the sizes of openai/clip-vit-base-patch32
  (ViT-B/32 image tower, 12-layer text tower, d=512) with random weights, saved and loaded
  through ``hf:<folder>`` like a real checkpoint; data: COCO-like JPEGs (640x480) on disk with 5
  captions each, so the loader really decodes and resizes;
* ``toyclip``: the embedded default (``load_toyclip``) on the ``shapes`` world.

For each, the reference is the model alone in the same process: ``forward-only`` embeds batches
that were preprocessed beforehand, so it is the most extraction could reach. Printed per model:
embeddings/s of extract, of forward-only, their ratio (1.0 = loading fully hidden), the share of
the model's time spent waiting for the loader, wait / (wait + forward), and the loader's busy time
(reading, decoding, preprocessing, tokenising, in background threads) against the run time.

Run: ``python benchmarks/extract_throughput.py [--images 128] [--batch-size 32] [--device cpu]
[--repeats 3] [--skip-toyclip] [--toyclip-random]``. ``load_toyclip`` trains once (a few minutes,
cached) when no weights are found; ``--toyclip-random`` measures the same network untrained.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny-model builders, shared with tests

import fixtures_models as fm  # noqa: E402
from vlmsae import data, models  # noqa: E402
from vlmsae.embed import extract  # noqa: E402


def write_jpeg_folder(folder: Path, n: int, captions: int = 5, seed: int = 0) -> Path:
    """n random 640x480 JPEGs (smooth noise, so they compress like photos) and a JSONL index."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texts = fm.random_captions(n * captions, seed)
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
        rows += [{"image": f"{i}.jpg", "caption": texts[i * captions + j]} for j in range(captions)]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "pairs.jsonl"


def forward_only(model, source, batch_size: int) -> float:
    """Embeddings/s of the model alone on batches prepared beforehand (the in-process reference)."""
    images = [source[i][0] for i in range(len(source))]
    texts = [c for i in range(len(source)) for c in source[i][1]]
    image_batches = [model.preprocess_images(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    text_batches = [model.tokenize(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    model.embed_image_inputs(image_batches[0])  # warm-up
    start = time.perf_counter()
    outs = [model.embed_image_inputs(b) for b in image_batches] + [model.embed_text_inputs(b) for b in text_batches]
    torch.cat([o.sum(0, keepdim=True) for o in outs]).cpu()  # one sync at the end, as extract does
    return (len(images) + len(texts)) / (time.perf_counter() - start)


def measure(label: str, model, source, batch_size: int, workdir: Path, repeats: int) -> dict:
    """Alternate forward-only and extract ``repeats`` times; report medians (a shared machine's
    speed drifts, and alternating exposes both to the same drift)."""
    runs = []
    for k in range(repeats):
        reference = forward_only(model, source, batch_size)
        result = extract(model, source, workdir / f"{label}-{k}", batch_size=batch_size,
                         shard_size=max(batch_size, 1024), progress=False)
        s = result.stats
        runs.append({"extract_emb_s": s["embeddings"] / s["total_s"], "forward_only_emb_s": reference,
                     "model_waiting_share": s["wait_s"] / max(s["wait_s"] + s["forward_s"], 1e-9),
                     "loader_busy_share": s["load_s"] / s["total_s"], "stats": s})
    med = {key: float(np.median([r[key] for r in runs])) for key in runs[0] if key != "stats"}
    med["ratio"] = float(np.median([r["extract_emb_s"] / r["forward_only_emb_s"] for r in runs]))
    s = runs[-1]["stats"]
    print(f"{label:10s} {s['items']:6d} items {s['embeddings']:7d} emb | extract {med['extract_emb_s']:8.1f} emb/s | "
          f"forward-only {med['forward_only_emb_s']:8.1f} emb/s | ratio {med['ratio']:.2f} | model waiting for data "
          f"{100 * med['model_waiting_share']:.1f}% | loader busy {100 * med['loader_busy_share']:.0f}% of run "
          f"(medians of {repeats}; last run: {s['total_s']:.1f} s = forward {s['forward_s']:.1f} + waiting "
          f"{s['wait_s']:.2f} + writing {s['write_s']:.2f} + rest)", flush=True)
    return {"model": label, **med}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=128, help="images for clip-base (5 captions each)")
    parser.add_argument("--shapes", type=int, default=4096, help="shapes pairs for toyclip")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 on an oversubscribed machine: spinning OpenMP teams "
                             "of 2+ threads there run several times slower than 1 thread)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating reference/extract runs (medians)")
    parser.add_argument("--skip-toyclip", action="store_true")
    parser.add_argument("--toyclip-random", action="store_true",
                        help="toyclip with random weights (same speed; no training when no weights are cached)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = models.load(fm.build_hf("clip-base", tmp / "clip-base"), device=args.device)
        source = data.load(f"folder:{write_jpeg_folder(tmp / 'jpegs', args.images)}")
        measure("clip-base", model, source, args.batch_size, tmp, args.repeats)
        if not args.skip_toyclip:
            from vlmsae.models import toyclip

            if args.toyclip_random:  # speed does not depend on the weights: skip the one-off training
                cfg, vocab = toyclip.ToyCLIPConfig(), toyclip.build_vocab()
                toy = toyclip.ToyCLIP(toyclip.ToyCLIPNet(cfg, len(vocab)), cfg, vocab, device=args.device)
            else:
                toy = toyclip.load_toyclip(device=args.device)
            measure("toyclip", toy, data.load("shapes", n=args.shapes, seed=0, split="test"),
                    max(args.batch_size, 256), tmp, args.repeats)


if __name__ == "__main__":
    main()
