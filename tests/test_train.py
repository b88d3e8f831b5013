"""The training loop: dictionary recovery, exact resume after a crash, memory-mapped data, bad input."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vlmsae.sae import BatchTopKSAE, TopKSAE
from vlmsae.synthetic import sparse_dictionary_data
from vlmsae.train import lr_factor, train_sae


@pytest.mark.parametrize("cls", [BatchTopKSAE, TopKSAE])
def test_recovers_planted_dictionary(cls):
    truth = sparse_dictionary_data(n=8192, d=32, c=64, k=3, noise=0.01, seed=0)
    sae = cls(32, 128, 3, dead_after=2000)
    history = train_sae(sae, truth.data, steps=1000, batch_size=256, lr=3e-3, progress=False)
    best_cosine = (truth.dictionary @ sae.dictionary.detach().T).max(dim=1).values
    assert best_cosine.mean() >= 0.9
    assert history[-1]["r2"] > 0.85 and history[-1]["l0"] == pytest.approx(3.0)


def test_history_reports_per_dimension_r2_and_l0(planted):
    """With the whole data set as the batch, the R2 logged at step t+1 is the R2 of the weights after step t."""
    import copy

    sae = TopKSAE(planted.data.shape[1], 48, 3)
    snapshots = []
    history = train_sae(sae, planted.data, steps=4, batch_size=4096, lr=1e-3, log_every=1, progress=False,
                        on_step=lambda step: snapshots.append(copy.deepcopy(sae.state_dict())))
    x = planted.data.numpy().astype(np.float64)
    for entry, state in zip(history[1:], snapshots[:-1]):
        sae.load_state_dict(state)
        with torch.no_grad():
            x_hat = sae(planted.data)[2].numpy()
        expected = 1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        assert entry["r2"] == pytest.approx(expected, abs=1e-4)
        assert entry["l0"] == 3.0


def test_lr_schedule_is_linear_warmup_then_cosine():
    assert lr_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


RUN = textwrap.dedent(
    """
    import os, sys, torch
    from vlmsae.sae import BatchTopKSAE
    from vlmsae.synthetic import sparse_dictionary_data
    from vlmsae.train import train_sae
    checkpoint_dir, die_at, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    data = sparse_dictionary_data(n=2048, d=16, c=32, k=2, noise=0.01, seed=1).data
    torch.manual_seed(7)
    sae = BatchTopKSAE(16, 64, 2, dead_after=256)
    def on_step(step):
        if step == die_at:
            os._exit(17)  # an abrupt death: no cleanup, no final checkpoint
    history = train_sae(sae, data, steps=120, batch_size=128, lr=3e-3, seed=3, checkpoint_dir=checkpoint_dir,
                        checkpoint_every=25, log_every=10, resume=True, progress=False, on_step=on_step)
    torch.save({"state": sae.state_dict(), "r2": [h["r2"] for h in history]}, out)
    """
)


def run_training(tmp_path, name, die_at):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / name), str(die_at), str(tmp_path / f"{name}.pt")],
        capture_output=True, text=True, timeout=300,
    )


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = run_training(tmp_path, "straight", die_at=-1)
    assert straight.returncode == 0, straight.stderr
    crashed = run_training(tmp_path, "crashed", die_at=60)
    assert crashed.returncode == 17
    assert (tmp_path / "crashed" / "checkpoint.pt").exists()
    resumed = run_training(tmp_path, "crashed", die_at=-1)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "straight.pt", weights_only=True)
    b = torch.load(tmp_path / "crashed.pt", weights_only=True)
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert a["r2"] == b["r2"]
    assert not list((tmp_path / "crashed").glob("*.tmp"))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, planted):
    train_sae(TopKSAE(24, 48, 3), planted.data, steps=5, batch_size=128, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different run"):
        train_sae(TopKSAE(24, 64, 3), planted.data, steps=5, batch_size=128, checkpoint_dir=tmp_path,
                  resume=True, progress=False)


def test_memory_mapped_data_trains_exactly_like_in_memory(tmp_path, planted):
    array = planted.data.numpy()
    mapped = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float32, shape=array.shape)
    mapped[:] = array
    mapped.flush()
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    results = []
    for data in (planted.data, mapped):
        torch.manual_seed(0)
        sae = BatchTopKSAE(24, 48, 3)
        train_sae(sae, data, steps=30, batch_size=256, progress=False)
        results.append(sae.state_dict())
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


@pytest.mark.parametrize(
    "data, message",
    [
        (torch.full((300, 24), float("nan")), "NaN or Inf"),
        (torch.cat([torch.randn(299, 24), torch.tensor([[float("inf")] * 24])]), "NaN or Inf"),
        (torch.randn(300, 25), "dimension 25"),
        (torch.randn(0, 24), "empty"),
        (torch.randn(10, 24), "fewer than batch_size"),
        (torch.randn(300), "2-D"),
    ],
)
def test_bad_data_raises_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        train_sae(TopKSAE(24, 48, 3), data, steps=5, batch_size=128, progress=False)


def test_steps_or_epochs_exactly_one(planted):
    with pytest.raises(ValueError, match="exactly one"):
        train_sae(TopKSAE(24, 48, 3), planted.data, batch_size=128, progress=False)
    history = train_sae(TopKSAE(24, 48, 3), planted.data, epochs=0.5, batch_size=128, log_every=1, progress=False)
    assert history[-1]["step"] == 16  # 4096 rows / 128 = 32 steps per epoch


@pytest.mark.gpu
def test_trains_on_cuda_in_bf16(planted):
    sae = BatchTopKSAE(24, 96, 3)
    history = train_sae(sae, planted.data, steps=300, batch_size=512, lr=3e-3, device="cuda", progress=False)
    assert history[-1]["r2"] > 0.8
    assert next(sae.parameters()).is_cuda
