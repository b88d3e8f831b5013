"""The SAE variants: sparsity exactly as documented, sparse training path equal to the dense formula,
decoder constraint, AuxK, save/load."""

import json

import numpy as np
import pytest
import torch

from vlmsae.sae import BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE, load_sae
from vlmsae.train import train_sae

D, C, K = 16, 64, 4


def variants():
    return [TopKSAE(D, C, K), BatchTopKSAE(D, C, K), JumpReLUSAE(D, C, sparsity=1e-3), ReLUSAE(D, C, l1=1e-3)]


def test_topk_has_exactly_k_codes_per_example():
    torch.manual_seed(0)
    sae = TopKSAE(D, C, K)
    x = torch.randn(50, D)
    _, codes = sae.encode(x)
    assert ((codes > 0).sum(1) == K).all()
    out = sae.training_loss(x)
    assert out.l0.item() == K


def dense_reference(sae, x, keep):
    """Independent numpy computation of codes and reconstruction for a given keep-rule."""
    W_enc, b_enc = sae.W_enc.detach().numpy(), sae.b_enc.detach().numpy()
    W_dec, b_dec = sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy()
    pre = (x.numpy() - b_dec) @ W_enc.T + b_enc
    codes = keep(np.maximum(pre, 0))
    return codes, codes @ W_dec + b_dec


def test_topk_training_path_equals_dense_formula():
    torch.manual_seed(1)
    sae = TopKSAE(D, C, K)
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(40, D)

    def keep_top_k_per_row(codes):
        threshold = np.sort(codes, axis=1)[:, -K][:, None]
        return np.where(codes >= threshold, codes, 0.0)

    codes, x_hat = dense_reference(sae, x, keep_top_k_per_row)
    out = sae.training_loss(x)
    np.testing.assert_allclose(out.x_hat.detach().numpy(), x_hat, atol=1e-5)
    assert ((codes > 0).sum(1) == K).all()


def test_batchtopk_keeps_exactly_k_times_batch_codes_in_training():
    torch.manual_seed(2)
    sae = BatchTopKSAE(D, C, K)
    x = torch.randn(32, D)

    def keep_top_kb_of_batch(codes):
        threshold = np.sort(codes.ravel())[-K * codes.shape[0]]
        return np.where(codes >= threshold, codes, 0.0)

    codes, x_hat = dense_reference(sae, x, keep_top_kb_of_batch)
    out = sae.training_loss(x)
    assert (codes > 0).sum() == K * 32
    assert out.l0.item() * 32 == K * 32
    np.testing.assert_allclose(out.x_hat.detach().numpy(), x_hat, atol=1e-5)
    # rows are free to use more or fewer than k concepts
    assert (codes > 0).sum(1).std() > 0


def test_batchtopk_threshold_is_running_mean_of_smallest_kept_code():
    torch.manual_seed(3)
    sae = BatchTopKSAE(D, C, K, threshold_decay=0.5)
    smallest = []
    for _ in range(3):
        x = torch.randn(16, D)
        with torch.no_grad():
            pre = torch.relu(sae.pre_codes(x)).flatten()
        smallest.append(pre.sort().values[-K * 16].item())
        sae.training_loss(x)
    weights = np.array([0.25, 0.5, 1.0]) * 0.5  # (1-decay) * decay^(age)
    expected = (weights * np.array(smallest)).sum() / weights.sum()
    assert sae.threshold.item() == pytest.approx(expected, rel=1e-5)


def test_batchtopk_inference_uses_threshold_and_is_close_to_k(planted):
    sae = BatchTopKSAE(planted.data.shape[1], 96, 3)
    train_sae(sae, planted.data, steps=400, batch_size=256, lr=3e-3, progress=False)
    _, codes = sae.encode(planted.data)
    assert (codes[codes > 0] > sae.threshold).all()
    assert 0.7 * 3 <= (codes > 0).sum(1).float().mean().item() <= 1.3 * 3


@pytest.mark.parametrize("index", range(4))
def test_save_load_roundtrip_reproduces_outputs(tmp_path, planted, index):
    sae = variants()[index]
    sae = type(sae)(planted.data.shape[1], C, **({"k": K} if hasattr(sae, "k") else {}))
    train_sae(sae, planted.data, steps=30, batch_size=128, progress=False)
    sae.save(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(sae)
    x = planted.data[:100]
    for a, b in zip(sae(x), loaded(x)):
        assert torch.equal(a, b)
    config = json.loads((tmp_path / "sae" / "config.json").read_text())
    assert config["class"] == type(sae).__name__ and config["d"] == x.shape[1] and config["c"] == C
    if isinstance(sae, BatchTopKSAE):
        assert config["threshold"] == pytest.approx(sae.threshold.item())
    assert not list((tmp_path / "sae").glob("*.tmp"))


def test_load_rejects_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_sae(tmp_path)
    TopKSAE(D, C, K).save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["class"] = "MysterySAE"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="MysterySAE"):
        load_sae(tmp_path)


@pytest.mark.parametrize("index", range(4))
def test_decoder_rows_unit_norm_after_training(planted, index):
    sae = variants()[index]
    sae = type(sae)(planted.data.shape[1], C, **({"k": K} if hasattr(sae, "k") else {}))
    train_sae(sae, planted.data, steps=40, batch_size=128, lr=1e-2, progress=False)
    norms = sae.dictionary.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_parallel_gradient_component_is_removed():
    torch.manual_seed(4)
    sae = TopKSAE(D, C, K)
    sae.training_loss(torch.randn(20, D)).loss.backward()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() > 1e-4
    sae.remove_parallel_decoder_grad()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-6


def test_jumprelu_l0_falls_as_sparsity_rises(planted):
    l0 = []
    for sparsity in (1e-4, 3e-3, 3e-2):
        torch.manual_seed(0)
        sae = JumpReLUSAE(planted.data.shape[1], C, sparsity=sparsity, init_threshold=1e-2, bandwidth=1e-2)
        history = train_sae(sae, planted.data, steps=300, batch_size=256, lr=3e-3, progress=False)
        l0.append(history[-1]["l0"])
    assert l0[0] > l0[1] > l0[2], l0


def test_jumprelu_threshold_receives_straight_through_gradient():
    torch.manual_seed(5)
    sae = JumpReLUSAE(D, C, sparsity=1.0, init_threshold=0.1, bandwidth=0.5)
    sae.training_loss(torch.randn(64, D)).loss.backward()
    # the L0 penalty alone pushes every threshold whose window holds pre-codes upwards
    assert (sae.log_threshold.grad < 0).sum() > C // 2
    assert sae.log_threshold.dtype == torch.float32


def test_auxk_matches_its_formula_and_reaches_only_dead_concepts():
    torch.manual_seed(6)
    sae = TopKSAE(D, C, K, k_aux=5)
    dead = torch.zeros(C, dtype=torch.bool)
    dead[:10] = True
    sae.examples_since_fired[dead] = sae.dead_after + 1
    x = torch.randn(30, D)
    x_centered = x - sae.b_dec
    residual = torch.randn(30, D)
    with torch.no_grad():
        dense_pre = x_centered @ sae.W_enc.T + sae.b_enc
    aux = sae.auxk.loss(sae, x_centered, dense_pre, residual, sae.dead_mask())
    pre = dense_pre.numpy().copy()
    pre[:, ~dead.numpy()] = -np.inf
    top = np.argsort(pre, axis=1)[:, -5:]
    codes = np.zeros_like(pre)
    np.put_along_axis(codes, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    expected = min(10 / 5, 1.0) * ((residual.numpy() - codes @ sae.W_dec.detach().numpy()) ** 2).sum(1).mean()
    assert aux.item() == pytest.approx(expected, rel=1e-5)
    aux.backward()
    assert sae.W_enc.grad[~dead].abs().max() == 0
    assert sae.W_enc.grad[dead].abs().max() > 0


def test_auxk_revives_dead_concepts(planted):
    """Half the concepts start too weak to ever win the top-k: only AuxK brings them back."""

    def train(auxk):
        torch.manual_seed(0)
        sae = TopKSAE(planted.data.shape[1], 48, 3, auxk=auxk, dead_after=512)
        with torch.no_grad():
            sae.W_enc[:24] *= 0.01
        history = train_sae(sae, planted.data, steps=400, batch_size=256, lr=3e-3, log_every=10, progress=False)
        _, codes = sae.encode(planted.data)
        return ((codes > 0).sum(0) == 0).float().mean().item(), history[-1]["r2"]

    dead_with, r2_with = train(True)
    dead_without, r2_without = train(False)
    assert dead_without > 0.3 and dead_with < 0.1
    assert r2_with > r2_without + 0.1


def test_bad_sae_arguments_raise():
    with pytest.raises(ValueError, match="k"):
        TopKSAE(D, 8, 8)
    with pytest.raises(ValueError, match="k"):
        BatchTopKSAE(D, 8, 9)
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        TopKSAE(D, C, K).encode(torch.randn(3, D + 1))


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_sparse_gradients_equal_dense_autograd(cls):
    """The hand-written sparse backward equals autograd through dense codes with the same selection."""
    torch.manual_seed(7)
    sae = cls(D, C, K, auxk=False)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(24, D)
    sae.training_loss(x).loss.backward()
    sparse_grads = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    sae.zero_grad()

    pre = torch.nn.functional.linear(x - sae.b_dec, sae.W_enc, sae.b_enc)
    relu_pre = pre.detach().clamp_min(0)
    if cls is TopKSAE:
        keep = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, relu_pre.topk(K, dim=1).indices, True)
    else:
        keep = relu_pre >= relu_pre.flatten().topk(K * 24).values.min()
    codes = torch.relu(pre) * keep
    loss = (x - (codes @ sae.W_dec + sae.b_dec)).pow(2).sum(-1).mean()
    loss.backward()
    dense_grads = [sae.W_enc.grad, sae.b_enc.grad, sae.W_dec.grad, sae.b_dec.grad]
    for sparse, dense in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-4)
