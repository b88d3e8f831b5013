"""Extraction under torchrun on CPU (gloo, 2 processes): the 2-rank set equals a 1-rank run row for
row, bit for bit; a rank killed mid-run leaves its shards missing, and a rerun (2 ranks, or one
plain process) computes only those and ends with the same set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from vlmsae import data, models
from vlmsae.embed import EmbeddingSet, extract

N_PAIRS, BATCH, SHARD = 240, 16, 30  # 8 shards: 4 per rank
N_SHARDS = 8
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from vlmsae import data, models
    from vlmsae.embed import extract
    out, mode = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    def on_shard(j):
        if mode == "die" and rank == 1:
            os._exit(13)  # like a SIGKILL right after rank 1's first shard is on disk
    result = extract(models.load("toyclip"), data.load("shapes", n={n}), out, batch_size={batch},
                     shard_size={shard}, keep_shards=True, progress=False, on_shard=on_shard, distributed=True)
    with open(os.path.join(sys.argv[3], f"rank{{rank}}.json"), "w") as handle:
        json.dump({{"rank_shards": result.stats["rank_shards"], "n_image": result.n_image}}, handle)
""").format(n=N_PAIRS, batch=BATCH, shard=SHARD)


def torchrun(*args, ranks=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)


def assert_same_set(got: EmbeddingSet, want: EmbeddingSet):
    assert np.array_equal(got.all, want.all) and got.all.dtype == want.all.dtype == np.float32
    assert np.array_equal(got.pairs, want.pairs)
    assert got.ids == want.ids and got.captions == want.captions
    assert (got.n_image, got.n_text) == (want.n_image, want.n_text) == (N_PAIRS, N_PAIRS)


@contextmanager
def one_thread():
    """As each rank runs (OMP_NUM_THREADS=1): bit-equality must not hinge on how BLAS splits work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def extract_alone(out):
    """One process, no torch.distributed."""
    with one_thread():
        return extract(models.load("toyclip"), data.load("shapes", n=N_PAIRS), out, batch_size=BATCH,
                       shard_size=SHARD, progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return extract_alone(tmp_path_factory.mktemp("ref") / "emb")


def test_two_ranks_from_the_command_line_equal_one_process(reference, tmp_path):
    out = tmp_path / "emb"
    run = torchrun("-m", "vlmsae.embed", "toyclip", "shapes", "--data-arg", f"n={N_PAIRS}", "--out", str(out),
                   "--batch-size", str(BATCH), "--shard-size", str(SHARD), "--device", "cpu")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("EmbeddingSet(") == 1  # only rank 0 reports
    result = EmbeddingSet.open(out, verify=True)
    assert_same_set(result, reference)
    assert result.manifest["last_run"]["ranks"] == 2
    assert result.manifest["last_run"]["computed_shards"] == list(range(N_SHARDS))
    assert not (out / "shards").exists()


def test_killed_rank_resumes_only_its_missing_shards(reference, tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(SCRIPT)
    out, logs = tmp_path / "emb", tmp_path / "logs"
    logs.mkdir()
    crashed = torchrun(str(script), str(out), "die", str(logs))
    assert crashed.returncode != 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["shards"] == {}  # ranks never write the manifest
    finished = sorted(int(p.stem.split("_")[1]) for p in (out / "shards").glob("shard_*.json"))
    # round-robin: rank 1 owns shards 1, 3, 5, 7 and died right after shard 1; rank 0 owns the even ones
    assert 1 in finished and not {3, 5, 7} & set(finished)
    mtimes = {j: (out / "shards" / f"shard_{j:05d}.npz").stat().st_mtime_ns for j in finished}
    missing = [j for j in range(N_SHARDS) if j not in finished]

    # one plain process resumes a copy: the same plan, whatever the number of ranks
    alone = extract_alone(shutil.copytree(out, tmp_path / "copy"))
    assert alone.stats["computed_shards"] == missing
    assert_same_set(alone, reference)

    resumed = torchrun(str(script), str(out), "resume", str(logs))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = EmbeddingSet.open(out, verify=True)
    assert_same_set(result, reference)
    assert result.manifest["last_run"]["computed_shards"] == missing
    assert {j: (out / "shards" / f"shard_{j:05d}.npz").stat().st_mtime_ns for j in finished} == mtimes
    # the missing shards were dealt between the ranks, each computed once; every rank got the set
    ranks = [json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0]["rank_shards"] + ranks[1]["rank_shards"]) == missing
    assert ranks[0]["rank_shards"] == missing[0::2] and ranks[1]["rank_shards"] == missing[1::2]
    assert ranks[0]["n_image"] == ranks[1]["n_image"] == N_PAIRS


def test_distributed_without_torchrun_is_refused(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        extract(models.load("toyclip"), data.load("shapes", n=4), tmp_path / "emb", distributed=True, progress=False)
