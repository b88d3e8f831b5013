"""torchrun on CPU (gloo, 2 processes): DDP training equals one process, BatchTopK selects over the
global batch, a killed rank's run resumes; train_many equals separate runs."""

import subprocess
import sys
import textwrap

import pytest
import torch

from vlmsae.sae import BatchTopKSAE, TopKSAE
from vlmsae.train import train_many, train_sae

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from vlmsae.sae import BatchTopKSAE
    from vlmsae.synthetic import sparse_dictionary_data
    from vlmsae.train import train_sae
    out, checkpoint_dir, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    distributed = "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    data = sparse_dictionary_data(n=2048, d=16, c=32, k=2, noise=0.01, seed=1).data
    torch.manual_seed(7)
    sae = BatchTopKSAE(16, 64, 2, dead_after=256)
    def on_step(step):
        if step == die_at and rank == 1:
            os._exit(17)
    history = train_sae(sae, data, steps=80, batch_size=128, lr=3e-3, seed=3, distributed=distributed,
                        checkpoint_dir=checkpoint_dir or None, checkpoint_every=20, resume=True,
                        log_every=10, progress=False, on_step=on_step)
    # exactly k * B codes kept per global batch, counted over all ranks
    sae.train()
    sae.distributed = distributed
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = data[rank * 64 : rank * 64 + 128 // world] if distributed else data[:128]
    count = sae.training_loss(local).l0 * local.shape[0]
    if distributed:
        torch.distributed.all_reduce(count)
    if rank == 0:
        torch.save({"state": sae.state_dict(), "kept": float(count)}, out)
    """
)


def launch(tmp_path, name, ranks, die_at=-1, checkpoint=True):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    args = [str(script), str(tmp_path / f"{name}.pt"), str(tmp_path / name) if checkpoint else "", str(die_at)]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
    else:
        command = [sys.executable, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                          "OMP_NUM_THREADS": "1"})


def assert_same_weights(a, b, exact=False):
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("single")
    result = launch(tmp_path, "single", ranks=1, checkpoint=False)
    assert result.returncode == 0, result.stderr
    return torch.load(tmp_path / "single.pt", weights_only=True)


def test_two_ranks_equal_one_rank(tmp_path, single):
    result = launch(tmp_path, "ddp", ranks=2, checkpoint=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert_same_weights(single["state"], ddp["state"])
    assert ddp["kept"] == single["kept"] == 2 * 128


def test_killed_rank_resumes_to_the_same_result(tmp_path, single):
    crashed = launch(tmp_path, "ddp", ranks=2, die_at=50)
    assert crashed.returncode != 0
    assert (tmp_path / "ddp" / "checkpoint.pt").exists()
    resumed = launch(tmp_path, "ddp", ranks=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(single["state"], torch.load(tmp_path / "ddp.pt", weights_only=True)["state"])


def test_train_many_equals_separate_runs(planted):
    def fresh():
        saes = []
        for seed, cls, k in ((0, BatchTopKSAE, 3), (1, BatchTopKSAE, 3), (2, TopKSAE, 5)):
            torch.manual_seed(seed)
            saes.append(cls(planted.data.shape[1], 48, k))
        return saes

    together = fresh()
    histories = train_many(together, planted.data, steps=60, batch_size=256, lr=3e-3, progress=False)
    for sae, history in zip(together, histories):
        torch.manual_seed(0)
        alone = fresh()[together.index(sae)]
        alone_history = train_sae(alone, planted.data, steps=60, batch_size=256, lr=3e-3, progress=False)
        assert_same_weights(sae.state_dict(), alone.state_dict(), exact=True)
        assert [h["r2"] for h in history] == [h["r2"] for h in alone_history]


def test_train_many_checks_its_inputs(planted):
    with pytest.raises(ValueError, match="at least one"):
        train_many([], planted.data, steps=1)
    with pytest.raises(ValueError, match="dimension"):
        train_many([TopKSAE(24, 48, 3), TopKSAE(25, 48, 3)], planted.data, steps=1)
    with pytest.raises(ValueError, match="torchrun"):
        train_sae(TopKSAE(24, 48, 3), planted.data, steps=1, batch_size=128, distributed=True)
