"""Render speed of the shapes world: 50k pairs (target: under 10 s on 2 cores), and the
vectorised renderer against a per-image loop over the same code (reference, same process).

    python benchmarks/shapes_render.py [--n 50000]
"""

import argparse
import time

import numpy as np

from vlmsae.data import shapes


def per_image_images_per_second(n: int) -> float:
    """Reference: the same drawing code called on one image at a time."""
    rng = shapes._rng(0, "train")
    objs, scene = shapes._sample_objects(n, rng), shapes._sample_scene(n, rng)
    t0 = time.perf_counter()
    for i in range(n):
        shapes._render_chunk({k: v[i:i + 1] for k, v in objs.items()}, {k: v[i:i + 1] for k, v in scene.items()}, rng)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args()
    shapes.render_shapes(1000, seed=1)  # warm-up (imports, allocator)
    t0 = time.perf_counter()
    batch = shapes.render_shapes(args.n, seed=0)
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    shapes._captions(shapes._sample_objects(args.n, shapes._rng(0, "train")), 1, np.random.default_rng(0))
    caption_s = time.perf_counter() - t0
    reference = per_image_images_per_second(500)
    vectorised = args.n / total
    print(f"render_shapes({args.n}): {total:.2f} s ({vectorised:,.0f} pairs/s; captions {caption_s:.2f} s); "
          f"target < 10 s for 50k: {'met' if total * 50_000 / args.n < 10 else 'MISSED'}")
    print(f"per-image loop reference: {reference:,.0f} images/s -> vectorised is {vectorised / reference:.1f}x faster")
    assert batch.images.shape == (args.n, 32, 32, 3)


if __name__ == "__main__":
    main()
