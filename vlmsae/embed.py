"""Extraction of image and text embeddings into a sharded, checksummed, resumable cache.

``extract(model, data, out_dir)`` embeds every image and every caption of a pair source and
writes, under ``out_dir``::

    manifest.json      model, data, settings, dims, counts, sha256 of every file, status
    embeddings.npy     (n_image + n_text, dim) float32: image rows first, then caption rows
    pairs.npy          (n_text, 2) int64: [image row, text row] of each caption (rows of
                       ``.image`` and ``.text``), the matched pairs of the bridge score
    ids.json           the item id of each image row
    captions.json      the caption string of each text row
    shards/            work in progress: one ``shard_NNNNN.npz`` per ``shard_size`` items and
                       its record ``shard_NNNNN.json`` (sha256, counts), written once it is on disk

With ``normalize=True`` every row is L2-normalised, x / ||x||_2 (the paper's setting; no
centering). Work proceeds shard by shard; each finished shard is written atomically and its
sha256 recorded in the manifest, so an interrupted run resumes at the first unfinished shard
and a shard whose checksum fails is recomputed, never used. When all shards are done they are
joined into the files above (streamed, bounded memory) and, unless ``keep_shards``, removed.

Across processes and machines (``torchrun --nproc_per_node N -m vlmsae.embed MODEL DATA --out
DIR``, or ``extract(..., distributed=True)`` on every rank): rank 0 checks the folder and lists the
shards still to do; rank r embeds ``todo[r::world]`` into its own shard files and records; once
every rank is through, rank 0 gathers the records into the manifest and consolidates. Shards are
embedded alone whatever the rank, so the set equals a single-process run row for row (bit for
bit on CPU). A rank that dies leaves its unfinished shards without a record, and a rerun with any
number of ranks (or one plain process) computes only those. ``out_dir`` must be shared by all nodes.

``EmbeddingSet.open(out_dir)`` memory-maps the result: ``.image``, ``.text`` and ``.all`` are
views of one ``np.memmap``; ``.modality`` labels the rows of ``.all`` (0 image, 1 text);
``.mixture(ratio, n, seed)`` samples rows at an image:text ratio.

``get_or_extract(model_name, data_name, cache_root)`` keys a cache folder by model + data +
settings: a second call opens the finished set without loading the model (milliseconds).

Loading runs ahead of the model: a background thread fetches, decodes and preprocesses the next
batches (images in a thread pool) while the model embeds the current one; ``stats`` tells how
long the model waited for data (``wait_s``) against its own forward time (``forward_s``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import queue
import shutil
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from vlmsae.atomic import atomic_path, atomic_write_text
from vlmsae.data import describe
from vlmsae.data.base import ErrorLog, UnreadableImageError, check_on_error

FORMAT_VERSION = 1
IMAGE, TEXT = 0, 1
MODALITY_NAMES = ("image", "text")
FILES = ("embeddings.npy", "pairs.npy", "ids.json", "captions.json")


def default_cache_root() -> Path:
    """``$VLMSAE_CACHE/embeddings`` (default ``~/.cache/vlmsae/embeddings``)."""
    from vlmsae.cache import cache_dir

    return cache_dir("embeddings")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def cache_key(model: str, data: dict, settings: dict) -> str:
    """16 hex digits of sha256 over the canonical JSON of model name, data description, settings."""
    return hashlib.sha256(_dumps({"model": model, "data": data, "settings": settings}).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# the loaded result
# ----------------------------------------------------------------------------------------------
@dataclass
class Mixture:
    """Rows of an ``EmbeddingSet`` sampled at an image:text ratio (``rows`` index ``.all``)."""

    data: np.ndarray
    modality: np.ndarray
    rows: np.ndarray


def parse_ratio(ratio) -> tuple[float, float]:
    """``"1:3"``, ``(1, 3)`` or a number r (meaning r:1) -> (image part, text part)."""
    try:
        if isinstance(ratio, str):
            a, b = (float(x) for x in ratio.split(":"))
        elif isinstance(ratio, (tuple, list)):
            a, b = (float(x) for x in ratio)
        else:
            a, b = float(ratio), 1.0
    except (TypeError, ValueError):
        raise ValueError(f"ratio must be 'a:b', (a, b) or a number (a:1), got {ratio!r}") from None
    if a < 0 or b < 0 or a + b == 0 or not math.isfinite(a + b):
        raise ValueError(f"ratio parts must be non-negative, finite and not both 0, got {ratio!r}")
    return a, b


class EmbeddingSet:
    """A finished extraction, memory-mapped (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self.path, self.manifest = Path(path), manifest
        self.n_image, self.n_text = int(manifest["counts"]["image"]), int(manifest["counts"]["text"])
        self.dim = int(manifest["dim"])
        self.all = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self.pairs = np.load(self.path / "pairs.npy", mmap_mode="r")
        self._ids: list | None = None
        self._captions: list | None = None
        self.stats: dict = {}

    @classmethod
    def open(cls, path: str | os.PathLike, verify: bool = False) -> "EmbeddingSet":
        """Open a finished extraction; ``verify=True`` also checks every file's sha256."""
        path = Path(path)
        manifest = read_manifest(path)
        if manifest is None or manifest.get("status") != "complete":
            raise ValueError(f"{path} holds no finished extraction; run vlmsae.embed.extract(...) to make one")
        result = cls(path, manifest)
        if verify and (bad := result.verify()):
            raise ValueError(f"{path}: checksum mismatch in {bad}; run extract(...) again to recompute")
        return result

    @property
    def image(self) -> np.ndarray:
        return self.all[: self.n_image]

    @property
    def text(self) -> np.ndarray:
        return self.all[self.n_image:]

    @property
    def modality(self) -> np.ndarray:
        """(n_image + n_text,) int8: 0 for image rows of ``.all``, 1 for text rows."""
        return np.repeat(np.array([IMAGE, TEXT], dtype=np.int8), [self.n_image, self.n_text])

    @property
    def ids(self) -> list:
        if self._ids is None:
            self._ids = json.loads((self.path / "ids.json").read_text())
        return self._ids

    @property
    def captions(self) -> list[str]:
        if self._captions is None:
            self._captions = json.loads((self.path / "captions.json").read_text())
        return self._captions

    @property
    def model(self) -> str:
        return self.manifest["model"]

    @property
    def data(self) -> dict:
        return self.manifest["data"]

    @property
    def errors(self) -> dict:
        return self.manifest["errors"]

    def verify(self) -> list[str]:
        """Names of files whose sha256 differs from the manifest (empty when all are intact)."""
        checksums = self.manifest["checksums"]
        return [name for name in FILES
                if not (self.path / name).is_file() or sha256_file(self.path / name) != checksums[name]]

    def mixture(self, ratio, n: int | None = None, seed: int = 0) -> Mixture:
        """``n`` rows drawn without replacement, ``round(n a / (a + b))`` images and the rest
        texts for ratio a:b; ``n=None`` takes the most rows the smaller pool allows."""
        a, b = parse_ratio(ratio)
        limits = [self.n_image * (a + b) / a if a else math.inf, self.n_text * (a + b) / b if b else math.inf]
        largest = int(math.floor(min(limits) + 1e-9))
        n = largest if n is None else int(n)
        n_image = int(round(n * a / (a + b)))
        n_text = n - n_image
        if n < 1 or n_image > self.n_image or n_text > self.n_text:
            raise ValueError(f"cannot draw n={n} rows at {a:g}:{b:g} from {self.n_image} images and "
                             f"{self.n_text} texts; the most is n={largest}")
        rng = np.random.default_rng(seed)
        image_rows = rng.choice(self.n_image, size=n_image, replace=False)
        text_rows = self.n_image + rng.choice(self.n_text, size=n_text, replace=False)
        rows = np.sort(np.concatenate([image_rows, text_rows]))  # sorted: sequential memmap reads
        return Mixture(data=np.asarray(self.all[rows]), modality=self.modality[rows], rows=rows)

    def __repr__(self) -> str:
        return (f"EmbeddingSet({str(self.path)!r}, model={self.model!r}, images={self.n_image}, "
                f"texts={self.n_text}, dim={self.dim})")


# ----------------------------------------------------------------------------------------------
# manifest and shards
# ----------------------------------------------------------------------------------------------
def read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so this is damage, not a half-written file: start over


def write_manifest(out_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(out_dir) / "manifest.json", json.dumps(manifest, indent=1, default=_json_default))


def shard_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / "shards" / f"shard_{index:05d}.npz"


def shard_record_path(out_dir: Path, index: int) -> Path:
    """The record a rank writes once shard ``index`` is on disk (sha256, counts; see ``_plan``)."""
    return Path(out_dir) / "shards" / f"shard_{index:05d}.json"


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_shard(path: Path, image: np.ndarray, text: np.ndarray, text_item: np.ndarray, meta: dict) -> str:
    """Write one shard atomically; return its sha256."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append '.npz' to a name
            np.savez(handle, image=image, text=text, text_item=text_item,
                     meta=np.array(json.dumps(meta, default=_json_default)))
    return sha256_file(path)


def read_shard(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {"image": z["image"], "text": z["text"], "text_item": z["text_item"],
                "meta": json.loads(str(z["meta"]))}


def _shard_ok(out_dir: Path, manifest: dict, index: int) -> bool:
    entry = manifest["shards"].get(str(index))
    path = shard_path(out_dir, index)
    return bool(entry) and path.is_file() and sha256_file(path) == entry["sha256"]


# ----------------------------------------------------------------------------------------------
# the pipeline: a background loader feeding the model
# ----------------------------------------------------------------------------------------------
class _Steps:
    """Model steps split into CPU preparation (loader thread) and device forward (main thread).

    Adapters derived from ``vlmsae.models.base.EmbeddingModel`` prepare tensors in the loader;
    any other object with ``encode_images`` / ``encode_texts`` gets the raw images and strings.
    """

    def __init__(self, model):
        self.model = model
        self.split = all(hasattr(model, a) for a in ("preprocess_images", "tokenize", "embed_image_inputs",
                                                     "embed_text_inputs"))
        # page-locked batches only pay off when they are copied to a GPU
        self.pin = self.split and torch.device(getattr(model, "device", "cpu")).type == "cuda"

    def _ready(self, inputs):
        return {key: value.pin_memory() for key, value in inputs.items()} if self.pin else inputs

    def prepare_images(self, images):
        return self._ready(self.model.preprocess_images(images)) if self.split else images

    def prepare_texts(self, texts):
        return self._ready(self.model.tokenize(texts)) if self.split else texts

    def images(self, prepared) -> torch.Tensor:
        return self.model.embed_image_inputs(prepared) if self.split else self.model.encode_images(prepared)

    def texts(self, prepared) -> torch.Tensor:
        return self.model.embed_text_inputs(prepared) if self.split else self.model.encode_texts(prepared)


def _concat_prepared(parts: list):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    return [x for p in parts for x in p]


def _chunks(seq, size: int):
    return [seq[i:i + size] for i in range(0, len(seq), size)]


@dataclass
class _Chunk:
    item_index: list[int]       # source indices of the items whose image was read
    ids: list
    captions: list[str]
    text_item: list[int]        # for each caption: position of its item in item_index
    images: Any                 # prepared image batch (None when no image was read)
    texts: Any                  # prepared text batches, each at most batch_size rows
    errors: list[UnreadableImageError]
    load_s: float


def _load_chunk(data, indices: list[int], steps: _Steps, pool: ThreadPoolExecutor, workers: int,
                batch_size: int) -> _Chunk:
    start = time.perf_counter()

    def fetch(sub):
        ok, images, errors = [], [], []
        for i in sub:
            try:
                image, captions, item_id = data[i]
            except UnreadableImageError as err:
                errors.append(err)
                continue
            ok.append((i, item_id, list(captions)))
            images.append(image)
        return ok, (steps.prepare_images(images) if images else None), errors

    # split the chunk across the pool: decoding and resizing release the GIL
    parts = list(pool.map(fetch, _chunks(indices, max(1, math.ceil(len(indices) / workers)))))
    ok = [entry for part in parts for entry in part[0]]
    captions, text_item = [], []
    for position, (_, _, caps) in enumerate(ok):
        captions.extend(caps)
        text_item.extend([position] * len(caps))
    texts = [steps.prepare_texts(batch) for batch in _chunks(captions, batch_size)]
    return _Chunk(item_index=[e[0] for e in ok], ids=[e[1] for e in ok], captions=captions, text_item=text_item,
                  images=_concat_prepared([part[1] for part in parts]), texts=texts,
                  errors=[err for part in parts for err in part[2]], load_s=time.perf_counter() - start)


def _loader(data, shard_ranges, steps, batch_size, workers, out: queue.Queue, stop: threading.Event):
    """Producer thread: puts a _Chunk per batch, None at the end of each shard, an exception on failure."""

    def put(item) -> bool:
        while not stop.is_set():  # never block for good: the consumer may have stopped
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlmsae-load") as pool:
            for start, stop_item in shard_ranges:
                for indices in _chunks(list(range(start, stop_item)), batch_size):
                    if not put(_load_chunk(data, indices, steps, pool, workers, batch_size)):
                        return
                if not put(None):
                    return
    except BaseException as err:  # handed to the main thread, which raises it
        put(err)


@dataclass
class _Timer:
    wait_s: float = 0.0       # the model waiting for the loader
    forward_s: float = 0.0    # model forwards (and the one device-to-host copy per shard)
    load_s: float = 0.0       # loader busy time (reading, decoding, preprocessing, tokenizing)
    write_s: float = 0.0
    items: int = 0
    embeddings: int = 0


def _embed_shard(chunks, steps: _Steps, normalize: bool, errors: ErrorLog, on_error: str, timer: _Timer,
                 progress) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    image_parts, text_parts, text_item, ids, captions, item_index, shard_errors = [], [], [], [], [], [], []
    n_items_before = 0
    while True:
        start = time.perf_counter()
        chunk = chunks.get()
        timer.wait_s += time.perf_counter() - start
        if chunk is None:
            break
        if isinstance(chunk, BaseException):
            raise chunk
        for err in chunk.errors:
            errors.handle(err, on_error)  # raises under on_error='fail'
            shard_errors.append(str(err))
        timer.load_s += chunk.load_s
        start = time.perf_counter()
        if chunk.images is not None:
            image_parts.append(steps.images(chunk.images))
        text_parts.extend(steps.texts(batch) for batch in chunk.texts)
        timer.forward_s += time.perf_counter() - start
        text_item.extend(n_items_before + t for t in chunk.text_item)
        n_items_before += len(chunk.item_index)
        ids.extend(chunk.ids)
        captions.extend(chunk.captions)
        item_index.extend(chunk.item_index)
        n_done = len(chunk.item_index) + len(chunk.errors)
        timer.items += n_done
        progress.update(n_done)
    start = time.perf_counter()
    dim = None
    arrays = []
    for parts in (image_parts, text_parts):
        if parts:
            x = torch.cat(parts)
            if normalize:
                x = F.normalize(x, dim=-1)
            arrays.append(x.cpu().numpy().astype(np.float32, copy=False))  # one host sync per shard
            dim = x.shape[-1]
        else:
            arrays.append(None)
    timer.forward_s += time.perf_counter() - start
    image, text = (a if a is not None else np.zeros((0, dim or 0), np.float32) for a in arrays)
    timer.embeddings += len(image) + len(text)
    meta = {"ids": ids, "captions": captions, "item_index": item_index, "errors": shard_errors}
    return image, text, np.asarray(text_item, dtype=np.int64), meta


# ----------------------------------------------------------------------------------------------
# ranks: one process, or the processes of a torchrun launch
# ----------------------------------------------------------------------------------------------
class _Ranks:
    """Who does what. Rank 0 plans (reads and writes the manifest) and consolidates; every rank
    embeds its share of the shards. A single process is rank 0 of 1 and talks to no one.

    Control messages are small JSON strings broadcast as uint8 tensors over the default process
    group (on the rank's GPU under NCCL), so nothing is pickled."""

    def __init__(self, distributed: bool, model_device):
        self.distributed = distributed
        self.rank, self.world, self.device = 0, 1, torch.device("cpu")
        if not distributed:
            return
        import torch.distributed as dist

        from vlmsae.train import setup_distributed

        model_device = torch.device(model_device)
        self.rank, self.world, rank_device = setup_distributed(True, model_device)
        if model_device.type == "cuda" and model_device.index != rank_device.index:
            raise ValueError(f"rank {self.rank} should embed on {rank_device} (cuda:LOCAL_RANK) but the model is on "
                             f"{model_device}; load it with device=f'cuda:{{os.environ[\"LOCAL_RANK\"]}}'")
        if dist.get_backend() == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._dist = dist

    def _broadcast_json(self, value):
        payload = json.dumps(value, default=_json_default).encode() if self.rank == 0 else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        self._dist.broadcast(size, src=0)
        if self.rank == 0:
            buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(self.device)
        else:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        self._dist.broadcast(buffer, src=0)
        return json.loads(bytes(buffer.cpu().numpy()).decode())

    def from_rank0(self, work: Callable[[], Any]):
        """``work()`` runs on rank 0 and its JSON-able result reaches every rank. If it raises,
        every rank raises: a ValueError as the same ValueError, anything else as RuntimeError."""
        if not self.distributed:
            return work()
        failure, message = None, None
        if self.rank == 0:
            try:
                message = {"value": work()}
            except Exception as err:  # told to the other ranks before raising, so none hangs
                failure = err
                message = {"error": str(err), "kind": type(err).__name__}
        message = self._broadcast_json(message)
        if failure is not None:
            raise failure
        if "error" in message:
            if message["kind"] == "ValueError":
                raise ValueError(message["error"])
            raise RuntimeError(f"rank 0 failed ({message['kind']}: {message['error']})")
        return message["value"]

    def all_finished(self, failure: Exception | None) -> None:
        """Wait until every rank is through its share; raise on every rank if any failed."""
        if self.distributed:
            flags = torch.zeros(self.world, dtype=torch.int32, device=self.device)
            flags[self.rank] = int(failure is not None)
            self._dist.all_reduce(flags)
            failed = flags.nonzero().flatten().tolist()  # one host sync per run
        if failure is not None:
            raise failure
        if self.distributed and failed:
            raise RuntimeError(f"rank(s) {failed} failed; the shards they did not finish are missing. Run the "
                               "same extraction again (any number of ranks) to compute only those")


# ----------------------------------------------------------------------------------------------
# extraction
# ----------------------------------------------------------------------------------------------
def _identity(model, data, normalize: bool, shard_size: int) -> dict:
    return {"format": FORMAT_VERSION, "model": getattr(model, "name", type(model).__name__), "data": describe(data),
            "settings": {"normalize": bool(normalize), "shard_size": int(shard_size), "dtype": "float32",
                         "precision": getattr(model, "precision", "auto")}}


def _identity_key(identity: dict) -> str:
    return cache_key(identity["model"], identity["data"], {**identity["settings"], "format": identity["format"]})


def _consolidate(out_dir: Path, manifest: dict, n_shards: int, keep_shards: bool) -> dict:
    """Join the shards into embeddings.npy / pairs.npy / ids.json / captions.json (streamed)."""
    counts = [manifest["shards"][str(j)] for j in range(n_shards)]
    n_image, n_text = sum(c["n_image"] for c in counts), sum(c["n_text"] for c in counts)
    dim = max((c["dim"] for c in counts), default=0)
    ids, captions, errors = [], [], []
    with atomic_path(out_dir / "embeddings.npy") as emb_tmp, atomic_path(out_dir / "pairs.npy") as pairs_tmp:
        emb = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=np.float32, shape=(n_image + n_text, dim))
        pairs = np.lib.format.open_memmap(pairs_tmp, mode="w+", dtype=np.int64, shape=(n_text, 2))
        image_row, text_row = 0, 0
        for j in range(n_shards):
            shard = read_shard(shard_path(out_dir, j))
            ni, nt = len(shard["image"]), len(shard["text"])
            if ni:  # a shard whose images were all unreadable has none
                emb[image_row:image_row + ni] = shard["image"]
            if nt:
                emb[n_image + text_row:n_image + text_row + nt] = shard["text"]
            pairs[text_row:text_row + nt, 0] = image_row + shard["text_item"]
            pairs[text_row:text_row + nt, 1] = np.arange(text_row, text_row + nt)
            ids.extend(shard["meta"]["ids"])
            captions.extend(shard["meta"]["captions"])
            errors.extend(shard["meta"]["errors"])
            image_row, text_row = image_row + ni, text_row + nt
        emb.flush()
        pairs.flush()
        del emb, pairs
    atomic_write_text(out_dir / "ids.json", json.dumps(ids, default=_json_default))
    atomic_write_text(out_dir / "captions.json", json.dumps(captions))
    manifest.update(status="complete", dim=dim, counts={"image": n_image, "text": n_text, "items": manifest["n_items"]},
                    errors={"count": len(errors), "examples": errors[:20]},
                    checksums={name: sha256_file(out_dir / name) for name in FILES})
    if not keep_shards:
        shutil.rmtree(out_dir / "shards", ignore_errors=True)
        manifest["shards"] = {}
    return manifest


def _collect_shard_records(out_dir: Path, manifest: dict, n_shards: int, key: str) -> None:
    """Add to ``manifest`` the shards that ranks recorded next to their files since it was written.

    Ranks never write the manifest (one writer, rank 0); each finished shard gets its own record
    ``shard_NNNNN.json`` instead. Records of another model/data/settings (``key``) are ignored."""
    for j in range(n_shards):
        if str(j) in manifest["shards"]:
            continue
        record = _read_json(shard_record_path(out_dir, j))
        if isinstance(record, dict) and record.pop("key", None) == key:
            manifest["shards"][str(j)] = record


def _plan(out_dir: Path, identity: dict, n_items: int, shard_size: int, verify: bool) -> dict:
    """Rank 0: check ``out_dir`` against ``identity``, list the shards still to compute (missing
    or failing their checksum) and write the running manifest. ``{"complete": True}`` when a
    finished, intact set is already there."""
    manifest = read_manifest(out_dir)
    if manifest is not None:
        wanted = json.loads(_dumps(identity))
        differ = [k for k in wanted if manifest.get(k) != wanted[k]]
        if differ:
            raise ValueError(f"{out_dir} holds embeddings made with other {', '.join(differ)} "
                             f"({ {k: manifest.get(k) for k in differ} } there, { {k: wanted[k] for k in differ} } asked); "
                             "use another out_dir, the same settings, or delete it")
        if manifest.get("status") == "complete":
            if not verify or not EmbeddingSet(out_dir, manifest).verify():
                return {"complete": True}
            warnings.warn(f"{out_dir}: finished files fail their checksums; recomputing what is needed")
            manifest["status"] = "running"
    if n_items == 0:
        raise ValueError("data is empty: there is nothing to extract")
    n_shards = max(1, math.ceil(n_items / shard_size))
    if manifest is None or manifest.get("status") != "running":
        manifest = {**identity, "status": "running", "n_items": n_items, "n_shards": n_shards, "shards": {}}
    _collect_shard_records(out_dir, manifest, n_shards, _identity_key(identity))
    todo, recomputed = [], []
    for j in range(n_shards):
        if _shard_ok(out_dir, manifest, j):
            continue
        if str(j) in manifest["shards"]:
            recomputed.append(j)  # listed as done but missing or failing its checksum
            manifest["shards"].pop(str(j))
        todo.append(j)
    if recomputed:
        warnings.warn(f"{out_dir}: shard(s) {recomputed} failed their checksum and are recomputed")
    write_manifest(out_dir, manifest)
    return {"complete": False, "n_shards": n_shards, "todo": todo, "recomputed": recomputed}


def _finish(out_dir: Path, plan: dict, key: str, keep_shards: bool, last_run: dict) -> None:
    """Rank 0, once every rank is through: gather the shard records, consolidate, report errors."""
    manifest = read_manifest(out_dir)
    n_shards = plan["n_shards"]
    _collect_shard_records(out_dir, manifest, n_shards, key)
    missing = [j for j in range(n_shards) if str(j) not in manifest["shards"]]
    if missing:
        raise RuntimeError(f"{out_dir}: shard(s) {missing} have no record although every rank finished; is "
                           "out_dir on a file system that all nodes share? Run the extraction again to compute them")
    manifest = _consolidate(out_dir, manifest, n_shards, keep_shards)
    manifest["last_run"] = last_run
    write_manifest(out_dir, manifest)
    errors = ErrorLog(count=manifest["errors"]["count"], examples=list(manifest["errors"]["examples"]))
    if errors.count:
        message = f"{out_dir}: {errors.report()}" if errors.examples else (
            f"{out_dir}: {errors.count} unreadable image(s) were skipped (see manifest 'errors')")
        warnings.warn(message)


def extract(model, data, out_dir: str | os.PathLike, batch_size: int = 64, normalize: bool = True,
            shard_size: int = 4096, on_error: str = "skip", num_workers: int | None = None,
            keep_shards: bool = False, verify: bool = True, progress: bool = True,
            on_shard: Callable[[int], None] | None = None, distributed: bool = False) -> EmbeddingSet:
    """Embed every image and caption of ``data`` with ``model`` into ``out_dir`` (see module doc).

    ``batch_size``: items per loader batch, and rows per model forward on each side.
    ``shard_size``: items per shard, the unit of resumption. ``on_error``: ``"skip"`` counts
    unreadable images and reports them at the end, ``"fail"`` raises at the first one.
    ``num_workers``: loader threads (default min(8, CPUs)). ``verify``: on a finished
    ``out_dir``, check the files' sha256 before returning them. ``on_shard(j)`` is called after
    shard ``j`` is safely on disk.

    ``distributed=True`` (under torchrun; every rank calls this with the same arguments): the
    shards to compute are dealt round-robin, rank r taking ``todo[r::world]``; rank 0 writes the
    manifest and consolidates after every rank is through, and every rank returns the same set,
    equal row for row to a single-process run. On CUDA each rank's model must be on
    ``cuda:LOCAL_RANK``; ``out_dir`` must be a folder that every node sees.
    """
    check_on_error(on_error)
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ValueError(f"data must support len() and indexing (a pair source); got {type(data).__name__}. "
                         "Wrap an iterable of (image, captions, id) in a list first.")
    out_dir = Path(out_dir).expanduser()
    ranks = _Ranks(distributed, getattr(model, "device", "cpu"))
    if ranks.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    identity = _identity(model, data, normalize, shard_size)
    key, n_items = _identity_key(identity), len(data)
    start_all = time.perf_counter()
    plan = ranks.from_rank0(lambda: _plan(out_dir, identity, n_items, shard_size, verify))
    if plan["complete"]:
        return EmbeddingSet(out_dir, read_manifest(out_dir))
    todo, recomputed = plan["todo"], plan["recomputed"]
    mine = todo[ranks.rank::ranks.world]  # round-robin over what is left: balanced on any rerun too
    manifest = None if distributed else read_manifest(out_dir)  # only a lone process updates it per shard

    steps, timer, errors = _Steps(model), _Timer(), ErrorLog()
    workers = num_workers or min(8, os.cpu_count() or 1)
    ranges = [(j * shard_size, min((j + 1) * shard_size, n_items)) for j in mine]
    chunks: queue.Queue = queue.Queue(maxsize=2)  # two batches ahead: enough to hide loading
    stop = threading.Event()
    loader = threading.Thread(target=_loader, args=(data, ranges, steps, batch_size, workers, chunks, stop),
                              daemon=True, name="vlmsae-loader")
    if mine:
        try:  # lazy sources (shapes renders all on first access) set up once here, not once per thread
            data[ranges[0][0]]
        except UnreadableImageError:
            pass  # met again, and handled, by the loader
    if distributed:
        bar = tqdm(total=sum(b - a for a, b in ranges), unit="item", desc=f"extract rank {ranks.rank}/{ranks.world}",
                   disable=not progress or ranks.rank != 0)
    else:
        bar = tqdm(total=n_items, initial=n_items - sum(b - a for a, b in ranges), unit="item", desc="extract",
                   disable=not progress)
    failure = None
    loader.start()
    try:
        for j in mine:
            image, text, text_item, meta = _embed_shard(chunks, steps, normalize, errors, on_error, timer, bar)
            start = time.perf_counter()
            digest = write_shard(shard_path(out_dir, j), image, text, text_item, meta)
            entry = {"sha256": digest, "n_image": len(image), "n_text": len(text),
                     "dim": int(image.shape[1] if len(image) else text.shape[1]), "n_errors": len(meta["errors"])}
            atomic_write_text(shard_record_path(out_dir, j), json.dumps({"key": key, **entry}))
            if manifest is not None:
                manifest["shards"][str(j)] = entry
                write_manifest(out_dir, manifest)
            timer.write_s += time.perf_counter() - start
            if on_shard is not None:
                on_shard(j)
    except Exception as err:  # kept until every rank has reported, so the others do not wait for good
        failure = err
    finally:
        stop.set()
        bar.close()
    loader.join(timeout=5)
    ranks.all_finished(failure)
    last_run = {"recomputed_shards": recomputed, "computed_shards": todo, "ranks": ranks.world,
                "seconds": round(time.perf_counter() - start_all, 3), "batch_size": batch_size}
    ranks.from_rank0(lambda: _finish(out_dir, plan, key, keep_shards, last_run))
    result = EmbeddingSet(out_dir, read_manifest(out_dir))
    result.stats = {"wait_s": timer.wait_s, "forward_s": timer.forward_s, "load_s": timer.load_s,
                    "write_s": timer.write_s, "items": timer.items, "embeddings": timer.embeddings,
                    "total_s": time.perf_counter() - start_all, "recomputed_shards": recomputed,
                    "computed_shards": todo, "rank_shards": mine, "rank": ranks.rank, "world": ranks.world}
    return result


def get_or_extract(model, data, cache_root: str | os.PathLike | None = None, device: str = "cpu",
                   batch_size: int = 64, normalize: bool = True, shard_size: int = 4096, on_error: str = "skip",
                   model_kwargs: dict | None = None, data_kwargs: dict | None = None, **extract_kwargs) -> EmbeddingSet:
    """The cached ``EmbeddingSet`` of ``model`` on ``data``, extracting it on the first call.

    ``model`` and ``data`` are registry names (loaded only on a cache miss) or loaded objects.
    The folder is ``cache_root/<cache_key>`` with the key from model name, data description and
    settings; a finished folder is opened without loading the model or the data.
    """
    from vlmsae import data as data_registry
    from vlmsae import models as model_registry

    model_name = model_registry.resolve(model) if isinstance(model, str) else getattr(model, "name", repr(model))
    data_desc = ({"name": data, **(data_kwargs or {})} if isinstance(data, str) else describe(data))
    settings = {"normalize": bool(normalize), "shard_size": int(shard_size), "on_error": on_error}
    key = cache_key(model_name, data_desc, settings)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    out_dir = root / key
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest.get("status") == "complete":
        return EmbeddingSet(out_dir, manifest)
    if isinstance(model, str):
        model = model_registry.load(model, device=device, **(model_kwargs or {}))
    if isinstance(data, str):
        data = data_registry.load(data, **(data_kwargs or {}))
    return extract(model, data, out_dir, batch_size=batch_size, normalize=normalize, shard_size=shard_size,
                   on_error=on_error, **extract_kwargs)


def _data_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); VALUE read as JSON when it parses (``n=300``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--data-arg takes KEY=VALUE (e.g. n=300), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vlmsae.embed",
        description="Extract image and caption embeddings into a resumable cache. Under torchrun "
                    "(torchrun --nproc_per_node N -m vlmsae.embed ...) the ranks share the shards.")
    parser.add_argument("model", help="registry name: toyclip, clip, siglip, siglip2, aimv2, open_clip:..., hf:...")
    parser.add_argument("data", help="shapes, coco:<dir>, folder:<dir>, hf:<dir or name>, or a path")
    parser.add_argument("--out", required=True, help="output folder (resumes if it holds an unfinished run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="under torchrun, cuda means cuda:LOCAL_RANK")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not L2-normalised) embeddings")
    parser.add_argument("--on-error", choices=("skip", "fail"), default="skip")
    parser.add_argument("--split", default=None, help="data split (COCO, HF data sets, shapes)")
    parser.add_argument("--limit", type=int, default=None, help="first N images (COCO)")
    parser.add_argument("--data-arg", type=_data_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="other keyword argument of the data source, e.g. n=300 for shapes (repeatable)")
    parser.add_argument("--keep-shards", action="store_true", help="keep shards/ after consolidating")
    parser.add_argument("--collective-timeout-min", type=float, default=360.0,
                        help="under torchrun: how long ranks wait for each other (rank 0 consolidates alone)")
    args = parser.parse_args(argv)
    from vlmsae import data as data_registry
    from vlmsae import models as model_registry

    distributed = "WORLD_SIZE" in os.environ  # set by torchrun
    rank, device = 0, torch.device(args.device)
    if distributed:
        import datetime

        import torch.distributed as dist

        from vlmsae.train import setup_distributed

        if not dist.is_initialized():  # the default timeout (10-30 min) is too short to consolidate a LAION-size set
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(minutes=args.collective_timeout_min))
        rank, _, device = setup_distributed(True, device)
    data_kwargs = {k: v for k, v in (("split", args.split), ("limit", args.limit)) if v is not None}
    data_kwargs.update(dict(args.data_arg))
    model = model_registry.load(args.model, device=device)
    data = data_registry.load(args.data, **data_kwargs)
    result = extract(model, data, args.out, batch_size=args.batch_size, normalize=not args.no_normalize,
                     shard_size=args.shard_size, on_error=args.on_error, keep_shards=args.keep_shards,
                     distributed=distributed)
    stats = result.stats
    if rank == 0:
        print(f"{result}\nerrors: {result.errors['count']}; model waited for data {stats.get('wait_s', 0):.1f} s, "
              f"forward {stats.get('forward_s', 0):.1f} s")
    if distributed:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
