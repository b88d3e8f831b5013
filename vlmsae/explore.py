"""The concept explorer: one static, self-contained, offline HTML page per (model, SAE).

    from vlmsae.embed import get_or_extract
    from vlmsae.explore import build_explorer
    build_explorer(get_or_extract("toyclip", "shapes"), sae, "toyclip_explorer.html")

or from a shell: ``python -m vlmsae.explore toyclip shapes path/to/saved_sae --out explorer.html``.

The page shows
* the concept map: 2-D layout of the decoder rows (`vlmsae.explore_layout`: UMAP with the cosine
  metric, cached on disk by the dictionary's hash; ``layout="pca"`` is the fast option for tests
  and previews), one point per concept, coloured by modality score (text-only .. image-only, grey
  where undefined), sized by energy (area ~ sqrt(energy / max energy)); hover: id, energy,
  modality score, firing frequency, classifier accuracy, short label;
* on click (or ``#concept=123`` in the URL): the top-activating images (thumbnails) and captions
  with their activation values, a histogram of the concept's activations per modality, its
  nearest concepts by decoder cosine, its strongest bridge partners;
* the top-N bridge pairs as edges (slider for N, toggle), filters on modality score, energy
  (log scale) and dead concepts, a search box by concept id or caption word.
The numbers come from `vlmsae.metrics` (see `vlmsae.explore_stats`).

Self-contained: plotly.js is inlined from the installed ``plotly`` package, thumbnails are
re-encoded base64 PNG/JPEG, the data sits in ``<script type="application/json">`` blocks read
with JSON.parse. The map data (a few numbers per concept) is read at load; per-concept details
sit in blocks of ``block_size`` concepts, parsed on the first click into a block, and the
thumbnails on the first panel that shows images: 8192 concepts stay responsive (the map is
one WebGL trace for all concepts, never a trace per concept).

Untrusted text (captions, ids, data set names) is escaped on the way in: the JSON is written
with every ``<``, ``>``, ``&`` (and non-ASCII, so U+2028/U+2029 too) as ``\\uXXXX`` escapes, so
no caption can close the ``<script>`` element that holds it, and the page's script shows text
only through ``textContent``; a Content-Security-Policy runs nothing but the page's own two
scripts (by hash) and allows no network request.

Size: plotly.js is about 4.6 MB; the rest grows with c (about 1-2 kB of details per live
concept with the default ``n_top=8``) and with the number of distinct top images (one thumbnail
each, about 1 kB for a 32x32 shapes image, 3-6 kB for a 96-pixel JPEG).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmsae.atomic import atomic_write_text
from vlmsae.explore_images import ImagesUnavailable, explicit_images, make_thumbnails, source_images
from vlmsae.explore_layout import concept_layout
from vlmsae.explore_stats import ConceptStats, concept_stats
from vlmsae.explore_template import APP_JS, TEMPLATE
from vlmsae.plots import COLORS, MODALITY_SCALE

DEFAULT_BRIDGES_SHOWN = 50
SIGNIFICANT_DIGITS = 6


@dataclass
class ExplorerBuild:
    """What `build_explorer` wrote."""

    path: Path
    bytes: int
    seconds: float
    n_concepts: int
    n_dead: int
    n_thumbnails: int
    images_available: bool
    layout: str

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6


# ------------------------------------------------------------------------------ safe embedding
def script_json(value) -> str:
    """JSON that is safe as the text of a ``<script type="application/json">`` element.

    ``<``, ``>`` and ``&`` become \\u003c, \\u003e, \\u0026 (valid JSON string escapes: they can
    only occur inside strings), so no ``</script>`` or ``<!--`` can appear; ``ensure_ascii``
    escapes everything else outside ASCII, U+2028 and U+2029 included. NaN is not JSON: callers
    turn undefined numbers into null first (``allow_nan=False`` catches any that slip through).
    """
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(x) -> float | None:
    """A float rounded to SIGNIFICANT_DIGITS, or None for NaN/inf (shown as n/a in the page)."""
    x = float(x)
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(x) else None


def _numbers(values) -> list:
    return [_number(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _script_hash(code: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii") + "'"


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ValueError("the explorer inlines plotly.js from the plotly package: pip install plotly") from None
    code = get_plotlyjs()
    if re.search(r"</script|<!--", code, flags=re.IGNORECASE):
        # would end the <script> element early; never the case for plotly's bundle so far
        raise ValueError("this plotly.js bundle contains '</script' or '<!--' and cannot be inlined; "
                         "install another plotly version")
    return code


# ------------------------------------------------------------------------------ page data
def _meta(stats: ConceptStats, xy_method: str, title: str, subtitle: str, images_reason: str | None,
          n_bins: int, block_size: int) -> dict:
    return {
        "title": title, "subtitle": subtitle, "n_concepts": int(len(stats.energy)), "n_image": stats.n_image,
        "n_text": stats.n_text, "n_dead": int(stats.dead.sum()), "layout": xy_method,
        "layout_name": "UMAP" if xy_method == "umap" else "PC", "hist_bins": n_bins, "block_size": block_size,
        "bridges": [[i, j, _number(b)] for i, j, b in stats.bridges], "default_bridges": DEFAULT_BRIDGES_SHOWN,
        "images_available": images_reason is None, "images_reason": images_reason or "",
        "classifier_sample": list(stats.classifier_sample), "missing": stats.missing,
        # the book's palette, so the explorer looks like every other figure
        "colors": {"scale": MODALITY_SCALE, "image": COLORS["image"], "text": COLORS["text"]},
    }


def _concepts(stats: ConceptStats, xy: np.ndarray) -> dict:
    """Column-oriented per-concept data for the map (read when the page loads)."""
    return {
        "x": _numbers(xy[:, 0]), "y": _numbers(xy[:, 1]), "energy": _numbers(stats.energy),
        "score": _numbers(stats.modality_score), "freq": _numbers(stats.frequency),
        "acc": _numbers(stats.classifier_accuracy), "dead": [bool(d) for d in stats.dead],
        "label": list(stats.labels), "words": [list(w) for w in stats.words],
    }


def _detail(stats: ConceptStats, i: int, captions: list[str]) -> dict:
    images = []
    for row, value in zip(stats.top_images[i], stats.top_image_values[i]):
        if row < 0:
            break
        first = stats.image_captions[row][0] if stats.image_captions[row] else None
        images.append([int(row), _number(value), captions[first] if first is not None else None])
    texts = [[captions[row], _number(value)] for row, value in zip(stats.top_texts[i], stats.top_text_values[i]) if row >= 0]
    return {
        "images": images, "texts": texts, "fires": [int(f) for f in stats.fires[i]],
        "hist_max": _number(stats.hist_max[i]), "hist_image": [int(v) for v in stats.hist_image[i]],
        "hist_text": [int(v) for v in stats.hist_text[i]],
        "neighbors": [[int(j), _number(s)] for j, s in zip(stats.neighbors[i], stats.neighbor_cosines[i])],
        "bridges_as_image": [[j, _number(b)] for j, b in stats.bridge_partners_as_image[i]],
        "bridges_as_text": [[j, _number(b)] for j, b in stats.bridge_partners_as_text[i]],
    }


def _data_block(element_id: str, value) -> str:
    return f'<script type="application/json" id="{element_id}">{script_json(value)}</script>'


def render_page(meta: dict, concepts: dict, details: list[dict], thumbnails: dict[int, str]) -> str:
    """The whole HTML document (see `vlmsae.explore_template`)."""
    block = meta["block_size"]
    blocks = [_data_block("vlmsae-meta", meta), _data_block("vlmsae-concepts", concepts),
              _data_block("vlmsae-thumbs", {str(row): uri for row, uri in thumbnails.items()})]
    blocks += [_data_block(f"vlmsae-detail-{b}", details[start : start + block])
               for b, start in enumerate(range(0, len(details), block))]
    plotly_js = _plotly_js()
    slots = {
        "TITLE": html.escape(meta["title"]), "PLOTLY_JS": plotly_js, "APP_JS": APP_JS, "DATA": "\n".join(blocks),
        "SCRIPT_HASHES": f"{_script_hash(plotly_js)} {_script_hash(APP_JS)}",
    }
    # one pass: text put into a slot is never searched for further slots
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: slots[m.group(1)], TEMPLATE)


# ------------------------------------------------------------------------------ the builder
def _describe_sae(sae) -> str:
    k = getattr(sae, "k", None)
    return f"{type(sae).__name__} c={sae.c}" + (f" k={k}" if k is not None else "")


def build_explorer(embeddings, sae, out_html: str | os.PathLike, *, images=None, layout: str = "umap",
                   title: str | None = None, n_top: int = 8, n_bins: int = 20, n_neighbors: int = 8,
                   n_bridges: int = 500, n_partners: int = 5, thumb_size: int = 96, jpeg_quality: int = 80,
                   classifier_rows: int = 10_000, block_size: int = 256, batch_size: int = 8192, device="cpu",
                   layout_cache: str | os.PathLike | None = None, seed: int = 0, progress: bool = True) -> ExplorerBuild:
    """Write the explorer of `sae` on `embeddings` (an `EmbeddingSet`) to `out_html`, atomically.

    images: None re-opens the set's pair source (`vlmsae.explore_images.source_images`); a
    callable (image row -> PIL image or array) or a sequence with one image per row of
    ``embeddings.image`` uses those; False leaves thumbnails out. When images cannot be had the
    page says "images unavailable" with the reason and everything else still works.
    layout: "umap" (cached on disk, see `vlmsae.explore_layout`) or "pca" (fast, for tests).
    n_top: top images and top captions per concept. n_bridges: bridge pairs embedded (the
    slider's range). classifier_rows: rows per modality for the classifier accuracy (a seeded
    sample above it). block_size: concepts per lazily parsed details block.
    """
    start = time.perf_counter()
    for name, value in (("n_top", n_top), ("n_bins", n_bins), ("block_size", block_size), ("thumb_size", thumb_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("n_neighbors", n_neighbors), ("n_bridges", n_bridges), ("n_partners", n_partners)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if not all(hasattr(embeddings, a) for a in ("image", "text", "pairs", "captions", "n_image", "n_text", "dim")):
        raise ValueError(f"embeddings must be a vlmsae.embed.EmbeddingSet (e.g. from get_or_extract), "
                         f"got {type(embeddings).__name__}")
    stats = concept_stats(embeddings, sae, n_top=n_top, n_bins=n_bins, n_neighbors=n_neighbors, n_bridges=n_bridges,
                          n_partners=n_partners, classifier_rows=classifier_rows, batch_size=batch_size,
                          device=device, seed=seed, progress=progress)
    xy = concept_layout(sae.dictionary, layout, seed=seed, cache_dir=layout_cache)

    thumbnails, images_reason = {}, None
    if images is False:
        images_reason = "thumbnails were left out of this build (images=False)"
    elif embeddings.n_image == 0:
        images_reason = "this set has no images"
    else:
        try:
            get = source_images(embeddings) if images is None else explicit_images(images, embeddings.n_image)
            wanted = stats.top_images[stats.top_images >= 0]
            thumbnails = make_thumbnails(wanted, get, size=thumb_size, jpeg_quality=jpeg_quality, progress=progress)
        except ImagesUnavailable as err:
            images_reason, thumbnails = str(err), {}

    captions = list(embeddings.captions) if embeddings.n_text else []
    model = getattr(embeddings, "model", "embeddings")
    title = title or f"Concept explorer: {model}, {_describe_sae(sae)}"
    data = getattr(embeddings, "data", {})
    subtitle = (f"{embeddings.n_image} images, {embeddings.n_text} captions ({data.get('source', 'data') if isinstance(data, dict) else 'data'}); "
                f"{sae.c} concepts, {int(stats.dead.sum())} dead; map: {'UMAP (cosine)' if layout == 'umap' else 'PCA'} "
                "of decoder rows, colour = modality score, size = energy")
    meta = _meta(stats, layout, title, subtitle, images_reason, n_bins, block_size)
    details = [_detail(stats, i, captions) for i in range(sae.c)]
    page = render_page(meta, _concepts(stats, xy), details, thumbnails)
    out_html = Path(out_html).expanduser()
    atomic_write_text(out_html, page)
    return ExplorerBuild(path=out_html, bytes=out_html.stat().st_size, seconds=time.perf_counter() - start,
                         n_concepts=sae.c, n_dead=int(stats.dead.sum()), n_thumbnails=len(thumbnails),
                         images_available=images_reason is None, layout=layout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vlmsae.explore",
                                     description="Build the static concept explorer of a saved SAE on cached embeddings.")
    parser.add_argument("model", help="model registry name (toyclip, clip, ...), as given to get_or_extract")
    parser.add_argument("data", help="data name (shapes, coco:<dir>, ...), as given to get_or_extract")
    parser.add_argument("sae", help="folder of a saved SAE (sae.save(folder))")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--layout", choices=("umap", "pca"), default="umap")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from vlmsae.embed import get_or_extract
    from vlmsae.sae import load_sae

    embeddings = get_or_extract(args.model, args.data, device=args.device)
    built = build_explorer(embeddings, load_sae(args.sae, device=args.device), args.out, layout=args.layout,
                           device=args.device)
    print(f"wrote {built.path} ({built.megabytes:.1f} MB, {built.n_concepts} concepts, {built.n_dead} dead, "
          f"{built.n_thumbnails} thumbnails) in {built.seconds:.1f} s")


if __name__ == "__main__":
    main()
