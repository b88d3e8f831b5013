"""Extraction: layout, normalisation and pairs against plain numpy; unreadable images; resume after
a killed run and recomputation of a corrupted shard, both bit for bit against an uninterrupted
run; the cache answers without loading the model; mixtures hold the asked image:text ratio."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fixtures_models as fm
from vlmsae import data, models
from vlmsae.embed import EmbeddingSet, extract, get_or_extract, main

TESTS = Path(__file__).parent
N, CAPS = 7, 2


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    name = fm.build_open_clip(root / "model")
    index = fm.write_pair_folder(root / "pairs", N, CAPS, seed=11)
    return {"root": root, "name": name, "index": index, "model": models.load(name)}


@pytest.fixture(scope="session")
def reference(tiny, tmp_path_factory):
    """One uninterrupted extraction (batch 2, shards of 3 items) that other tests compare to."""
    source = data.load(f"folder:{tiny['index']}")
    return extract(tiny["model"], source, tmp_path_factory.mktemp("ref") / "emb", batch_size=2, shard_size=3,
                   progress=False)


def _bits(result: EmbeddingSet) -> tuple:
    return (np.asarray(result.all).tobytes(), np.asarray(result.pairs).tobytes(), result.ids, result.captions)


def test_layout_normalisation_and_pairs(tiny, reference, tmp_path):
    source = data.load(f"folder:{tiny['index']}")
    result = reference
    assert isinstance(result.all, np.memmap) and result.all.dtype == np.float32
    assert (result.n_image, result.n_text, result.dim) == (N, N * CAPS, tiny["model"].dim)
    assert not (result.path / "shards").exists()
    # checksums in the manifest are the files' sha256
    for name, digest in result.manifest["checksums"].items():
        assert hashlib.sha256((result.path / name).read_bytes()).hexdigest() == digest
    # image rows first, then text rows; modality labels them
    np.testing.assert_array_equal(result.image, result.all[:N])
    np.testing.assert_array_equal(result.modality, [0] * N + [1] * (N * CAPS))
    # normalize=True rows are the raw rows divided by their L2 norm (raw from a second extraction)
    raw = extract(tiny["model"], source, tmp_path / "raw", batch_size=4, shard_size=5, normalize=False,
                  progress=False)
    norms = np.sqrt((np.asarray(raw.all, dtype=np.float64) ** 2).sum(axis=1, keepdims=True))
    assert not np.allclose(norms, 1.0, atol=1e-3)
    np.testing.assert_allclose(result.all, raw.all / norms, atol=1e-6)
    # pairs: caption row t belongs to image row pairs[t, 0]; captions in source order
    want_captions = [c for i in range(N) for c in source.captions_of(i)]
    assert result.captions == want_captions and result.ids == [source.id_of(i) for i in range(N)]
    for t in range(result.n_text):
        image_row, text_row = result.pairs[t]
        assert text_row == t and image_row == t // CAPS
        assert result.captions[t] in source.captions_of(image_row)  # image rows follow source order


def test_unreadable_images_are_skipped_and_reported(tiny, tmp_path):
    index = fm.write_pair_folder(tmp_path / "pairs", 6, CAPS, seed=12, missing=(1,), corrupt=(4,))
    source = data.load(f"folder:{index}")
    with pytest.warns(UserWarning, match="2 unreadable image"):
        result = extract(tiny["model"], source, tmp_path / "emb", batch_size=2, shard_size=4, progress=False)
    assert result.errors["count"] == 2 and result.ids == ["item0", "item2", "item3", "item5"]
    assert (result.n_image, result.n_text) == (4, 8)
    # pairs skip the two items: caption rows map onto the re-numbered image rows
    np.testing.assert_array_equal(result.pairs[:, 0], np.repeat(np.arange(4), CAPS))
    with pytest.raises(ValueError, match="item1.*on_error='skip'"):
        extract(tiny["model"], source, tmp_path / "emb_fail", batch_size=2, on_error="fail", progress=False)


SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import fixtures_models as fm
    fm.register_tiny_open_clip({root!r})
    from vlmsae import data, models
    from vlmsae.embed import extract
    model, source = models.load({name!r}), data.load("folder:" + {index!r})
    kwargs = dict(batch_size=2, shard_size=3, progress=False)
    if sys.argv[1] == "interrupt":   # die hard right after shard 1 is on disk, like a SIGKILL
        extract(model, source, sys.argv[2], on_shard=lambda j: os._exit(3) if j == 1 else None, **kwargs)
    else:
        result = extract(model, source, sys.argv[2], **kwargs)
        print(json.dumps(result.stats["computed_shards"]))
""")


def test_resume_after_kill_equals_uninterrupted_run(tiny, reference, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), root=str(tiny["root"] / "model"), name=tiny["name"],
                                    index=str(tiny["index"])))
    out = tmp_path / "emb"
    killed = subprocess.run([sys.executable, str(script), "interrupt", str(out)], capture_output=True, text=True)
    assert killed.returncode == 3, killed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and sorted(manifest["shards"]) == ["0", "1"]
    resumed = subprocess.run([sys.executable, str(script), "resume", str(out)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == [2]  # only the unfinished shard ran
    assert _bits(EmbeddingSet.open(out, verify=True)) == _bits(reference)


def test_corrupted_shard_is_detected_and_recomputed(tiny, reference, tmp_path):
    source = data.load(f"folder:{tiny['index']}")
    out = tmp_path / "emb"

    def stop_after_shard_1(j):
        if j == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract(tiny["model"], source, out, batch_size=2, shard_size=3, progress=False, on_shard=stop_after_shard_1)
    shard = out / "shards" / "shard_00000.npz"
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match=r"shard\(s\) \[0\] failed their checksum"):
        result = extract(tiny["model"], source, out, batch_size=2, shard_size=3, progress=False, keep_shards=True)
    assert result.stats["recomputed_shards"] == [0] and result.stats["computed_shards"] == [0, 2]
    assert _bits(result) == _bits(reference)

    # a damaged finished file is caught by verify and rebuilt from the kept shards
    with open(out / "embeddings.npy", "r+b") as handle:
        handle.seek(-4, os.SEEK_END)
        handle.write(b"\x00\x00\x80\x7f")  # last float becomes +inf
    with pytest.raises(ValueError, match="checksum mismatch in \\['embeddings.npy'\\]"):
        EmbeddingSet.open(out, verify=True)
    with pytest.warns(UserWarning, match="fail their checksums"):
        repaired = extract(tiny["model"], source, out, batch_size=2, shard_size=3, progress=False, keep_shards=True)
    assert repaired.stats["computed_shards"] == [] and _bits(repaired) == _bits(reference)


def test_other_settings_in_the_same_folder_are_refused(tiny, reference):
    source = data.load(f"folder:{tiny['index']}")
    with pytest.raises(ValueError, match="other settings.*another out_dir"):
        extract(tiny["model"], source, reference.path, shard_size=3, normalize=False, progress=False)


def test_cache_hit_opens_the_set_without_loading_the_model(tiny, reference, tmp_path, monkeypatch):
    kwargs = dict(cache_root=tmp_path, batch_size=2, shard_size=3, progress=False)
    first = get_or_extract(tiny["name"], f"folder:{tiny['index']}", **kwargs)
    assert _bits(first) == _bits(reference)

    def no_loading(*args, **kw):
        raise AssertionError("a cache hit must not load the model or the data")

    monkeypatch.setattr(models, "load", no_loading)
    monkeypatch.setattr(data, "load", no_loading)
    again = get_or_extract(tiny["name"], f"folder:{tiny['index']}", **kwargs)
    assert again.path == first.path and _bits(again) == _bits(first)
    with pytest.raises(AssertionError, match="must not load"):  # other settings: another key, a miss
        get_or_extract(tiny["name"], f"folder:{tiny['index']}", normalize=False, **kwargs)


class EncodeOnly:
    """A model with only the minimal interface (like toyclip): encode_images / encode_texts."""

    def __init__(self, inner):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim

    def encode_images(self, images):
        return self.inner.encode_images(images, batch_size=len(images))

    def encode_texts(self, texts):
        return self.inner.encode_texts(texts, batch_size=len(texts))


def test_models_with_only_encode_methods(tiny, reference, tmp_path):
    source = data.load(f"folder:{tiny['index']}")
    result = extract(EncodeOnly(tiny["model"]), source, tmp_path / "emb", batch_size=2, shard_size=3,
                     progress=False)
    np.testing.assert_allclose(result.all, reference.all, atol=1e-6)


def test_mixture_holds_the_ratio(reference):
    mix = reference.mixture("1:3", n=8, seed=0)
    assert (mix.modality == 0).sum() == 2 and (mix.modality == 1).sum() == 6
    assert len(set(mix.rows.tolist())) == 8
    np.testing.assert_array_equal(mix.data, np.asarray(reference.all)[mix.rows])
    np.testing.assert_array_equal(mix.modality, (mix.rows >= reference.n_image).astype(np.int8))
    np.testing.assert_array_equal(reference.mixture((1, 3), n=8, seed=0).rows, mix.rows)
    assert not np.array_equal(reference.mixture("1:3", n=8, seed=1).rows, mix.rows)
    # n=None: the largest sample the pools allow at 1:1 is 2 * 7 images
    assert len(reference.mixture(1.0).rows) == 2 * N
    assert set(reference.mixture("1:0").modality.tolist()) == {0}
    with pytest.raises(ValueError, match="the most is n=14"):
        reference.mixture("1:1", n=15)
    with pytest.raises(ValueError, match="ratio"):
        reference.mixture("one to three")


def test_command_line_extraction(tiny, reference, tmp_path, capsys):
    main([tiny["name"], f"folder:{tiny['index']}", "--out", str(tmp_path / "cli"), "--batch-size", "2",
          "--shard-size", "3", "--device", "cpu"])
    assert "images=7, texts=14" in capsys.readouterr().out
    assert _bits(EmbeddingSet.open(tmp_path / "cli", verify=True)) == _bits(reference)


def test_shapes_default_world_through_the_cache(tiny, tmp_path):
    result = get_or_extract(tiny["name"], "shapes", cache_root=tmp_path, data_kwargs={"n": 12, "seed": 0},
                            batch_size=5, shard_size=8, progress=False)
    shapes = data.load("shapes", n=12, seed=0)
    assert result.data == shapes.config and result.ids == list(range(12))
    assert result.captions == [c for i in range(12) for c in shapes[i][1]]
    want = tiny["model"].encode_images([shapes[i][0] for i in range(12)]).numpy()
    np.testing.assert_allclose(result.image, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
