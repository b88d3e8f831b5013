"""Train an SAE on embeddings, readable top to bottom.

    history = train_sae(sae, data, steps=2000, batch_size=1024, lr=1e-3, device="cuda")

`data` is a tensor, a numpy array, or a memory-mapped array too large to load: batches are
read row by row from it. The loop never waits on the device between logging steps (losses are
accumulated as tensors and read every `log_every` steps), uses bf16 autocast on CUDA, and
writes an atomic checkpoint every `checkpoint_every` steps. `resume=True` continues from that
checkpoint and, on CPU, ends with exactly the weights of an uninterrupted run: the data order is
a pure function of (seed, epoch), and model, optimiser, step, RNG and logging accumulators are
restored.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_path
from .sae.base import SAE

CHECKPOINT_NAME = "checkpoint.pt"


def train_sae(
    sae: SAE,
    data,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 1024,
    lr: float = 5e-4,
    warmup: int | float = 0.05,
    min_lr_ratio: float = 0.0,
    weight_decay: float = 1e-5,
    grad_clip: float | None = 1.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    amp: bool | None = None,
    init_pre_bias: str = "geometric_median",
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    log_every: int = 50,
    progress: bool = True,
    check_finite: bool = True,
    on_step=None,
) -> list[dict]:
    """Train `sae` in place with AdamW, linear warmup then cosine decay; return the logged history.

    steps / epochs: give exactly one. warmup: steps, or a fraction of all steps if < 1.
    amp: bf16 autocast; defaults to on for CUDA, off elsewhere.
    on_step(step): called after every optimiser step (step counts from 1).
    Each history entry: step, lr, loss, mse, r2 (per-dimension-mean R2 over the logging window),
    l0 (mean non-zeros per example), dead_fraction, seconds.
    """
    device = torch.device(device)
    n_rows = validate_data(data, sae.d, batch_size, check_finite)
    steps_per_epoch = n_rows // batch_size
    total_steps = resolve_steps(steps, epochs, steps_per_epoch)
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)
    amp = (device.type == "cuda") if amp is None else amp
    batches = BatchSource(data, batch_size, seed)

    torch.manual_seed(seed)
    sae.to(device).train()
    optimizer = make_optimizer(sae, lr, weight_decay, device)
    stats = LogAccumulator(device)
    history: list[dict] = []
    start_step = 0

    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    run_settings = {"seed": seed, "batch_size": batch_size, "total_steps": total_steps, "n_rows": n_rows}
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        start_step, history = load_checkpoint(checkpoint_path, sae, optimizer, stats, run_settings)
    else:
        sae.init_pre_bias(batches.sample(min(n_rows, 16384)).to(device), init_pre_bias)

    bar = tqdm(total=total_steps, initial=start_step, disable=not progress, desc=type(sae).__name__)
    started = time.perf_counter()
    prefetch = ThreadPoolExecutor(max_workers=1)
    next_batch = prefetch.submit(batches.get, start_step, device)
    for step in range(start_step, total_steps):
        x = next_batch.result()
        if step + 1 < total_steps:
            next_batch = prefetch.submit(batches.get, step + 1, device)

        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, total_steps, warmup_steps, min_lr_ratio)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = sae.training_loss(x)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_decoder_grad()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
        optimizer.step()
        sae.normalize_decoder()
        stats.add(x, out)

        done = step + 1
        bar.update(1)
        if done % log_every == 0 or done == total_steps:
            entry = stats.read(done, optimizer.param_groups[0]["lr"], sae, time.perf_counter() - started)
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4g}", r2=f"{entry['r2']:.3f}", l0=f"{entry['l0']:.1f}")
            refresh_auxk(sae)
        if checkpoint_path is not None and (done % checkpoint_every == 0 or done == total_steps):
            save_checkpoint(checkpoint_path, sae, optimizer, stats, done, history, run_settings)
        if on_step is not None:
            on_step(done)
    prefetch.shutdown()
    bar.close()
    sae.eval()
    return history


# ---------------------------------------------------------------------------- schedule and optimiser
def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to min_lr_ratio at the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(sae: SAE, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on the two weight matrices, never on biases or thresholds."""
    matrices = [sae.W_enc, sae.W_dec]
    others = [p for p in sae.parameters() if all(p is not m for m in matrices)]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=device.type == "cuda")


def refresh_auxk(sae: SAE) -> None:
    """Switch AuxK on while any concept is dead (a host read, done only at logging steps)."""
    if getattr(sae, "auxk", None) is not None:
        sae.auxk.active = bool(sae.dead_mask().any())


# ---------------------------------------------------------------------------- data
def validate_data(data, d: int, batch_size: int, check_finite: bool) -> int:
    """Check shape, size and finiteness (in chunks, so a memory map is never loaded whole)."""
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"data must be a 2-D (n, d) tensor or array, got shape {shape}")
    n_rows, width = shape
    if n_rows == 0:
        raise ValueError("data is empty (0 rows): extract or load embeddings first")
    if width != d:
        raise ValueError(f"data has dimension {width} but the SAE expects d={d}: build the SAE with d={width}")
    if n_rows < batch_size:
        raise ValueError(f"data has {n_rows} rows, fewer than batch_size={batch_size}: lower batch_size")
    if check_finite:
        chunk = max(1, 2**22 // d)
        for begin in range(0, n_rows, chunk):
            block = data[begin : begin + chunk]
            finite = torch.isfinite(block).all() if torch.is_tensor(block) else np.isfinite(block).all()
            if not finite:
                raise ValueError(
                    f"data contains NaN or Inf (first in rows {begin}..{min(n_rows, begin + chunk) - 1}): "
                    "clean or re-extract the embeddings"
                )
    return n_rows


def resolve_steps(steps, epochs, steps_per_epoch: int) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    total = int(steps) if steps is not None else int(round(epochs * steps_per_epoch))
    if total <= 0:
        raise ValueError(f"training would run {total} steps: raise steps or epochs")
    return total


class BatchSource:
    """Batch `step` is a pure function of (seed, step): each epoch is one seeded permutation.

    Rows of a batch are read in sorted order, which keeps memory-mapped reads sequential-ish.
    """

    def __init__(self, data, batch_size: int, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.n_rows = data.shape[0]
        self.steps_per_epoch = self.n_rows // batch_size
        self._epoch, self._permutation = None, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.n_rows, generator=generator)
        return self._permutation

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        indices = indices.sort().values
        if torch.is_tensor(self.data):
            return self.data[indices.to(self.data.device)].float()
        return torch.from_numpy(np.ascontiguousarray(self.data[indices.numpy()], dtype=np.float32))

    def get(self, step: int, device: torch.device) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        begin = position * self.batch_size
        batch = self.rows(self.permutation(epoch)[begin : begin + self.batch_size])
        if device.type == "cuda" and not batch.is_cuda:
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)

    def sample(self, n: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + 12345)
        return self.rows(torch.randperm(self.n_rows, generator=generator)[:n])


# ---------------------------------------------------------------------------- logging
class LogAccumulator:
    """Sums over the logging window, kept on the device so the hot loop never syncs."""

    FIELDS = ("loss", "mse", "sse", "sst", "l0", "steps")

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor, out) -> None:
        with torch.no_grad():
            x = x.float()
            sse = (x - out.x_hat.float()).pow(2).sum()
            sst = (x - x.mean(0)).pow(2).sum()
            mse = out.parts.get("mse", out.loss)
            one = torch.ones((), device=x.device)
            self.sums += torch.stack([out.loss.detach().float(), mse.detach().float(), sse, sst, out.l0.float(), one]).double()

    def read(self, step: int, lr: float, sae: SAE, seconds: float) -> dict:
        loss, mse, sse, sst, l0, count = self.sums.tolist()
        self.sums.zero_()
        return {
            "step": step, "lr": lr, "loss": loss / count, "mse": mse / count,
            "r2": 1.0 - sse / sst if sst > 0 else float("nan"), "l0": l0 / count,
            "dead_fraction": float(sae.dead_mask().float().mean()), "seconds": seconds,
        }


# ---------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, sae, optimizer, stats, step: int, history: list[dict], run_settings: dict) -> None:
    state = {
        "step": step,
        "model": sae.state_dict(),
        "sae_config": sae.config(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "log_sums": stats.sums.cpu(),
        "auxk_active": bool(getattr(sae, "auxk", None) is not None and sae.auxk.active),
        "history": history,
        "run_settings": run_settings,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, sae, optimizer, stats, run_settings: dict) -> tuple[int, list[dict]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["sae_config"] != sae.config() or state["run_settings"] != run_settings:
        raise ValueError(
            f"checkpoint {path} belongs to a different run (saved {state['sae_config']} {state['run_settings']}, "
            f"now {sae.config()} {run_settings}): use another checkpoint_dir or resume=False"
        )
    sae.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    stats.sums.copy_(state["log_sums"])
    if getattr(sae, "auxk", None) is not None:
        sae.auxk.active = state["auxk_active"]
    return state["step"], state["history"]
