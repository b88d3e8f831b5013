import numpy as np
import pytest
import torch

from vlmsae import cache
from vlmsae.sae import TopKSAE


def test_compute_once_then_load(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(5), "b": np.eye(2)}

    first = cache.get_or_compute("x", {"n": 5}, compute, kind="arrays", root=tmp_path)
    second = cache.get_or_compute("x", {"n": 5}, compute, kind="arrays", root=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["a"], second["a"])
    np.testing.assert_array_equal(second["b"], np.eye(2))
    cache.get_or_compute("x", {"n": 6}, compute, kind="arrays", root=tmp_path)
    assert len(calls) == 2  # other parameters, other key


def test_code_change_changes_key(monkeypatch):
    before = cache.cache_key("x", {"n": 1})
    monkeypatch.setattr(cache, "code_fingerprint", lambda: "another-version")
    assert cache.cache_key("x", {"n": 1}) != before


def test_failed_compute_leaves_nothing(tmp_path):
    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.get_or_compute("x", {"n": 1}, broken, kind="json", root=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert cache.get_or_compute("x", {"n": 1}, lambda: {"v": 3}, kind="json", root=tmp_path) == {"v": 3}


def test_sae_roundtrip(tmp_path):
    sae = TopKSAE(8, 16, 2)
    loaded = cache.get_or_compute("sae", {"s": 1}, lambda: sae, kind="sae", root=tmp_path)
    x = torch.randn(4, 8)
    assert torch.equal(sae(x)[1], loaded(x)[1])
    with pytest.raises(ValueError, match="unknown cache kind"):
        cache.get_or_compute("sae", {}, lambda: sae, kind="pickle", root=tmp_path)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from vlmsae.atomic import atomic_write_text

    atomic_write_text(tmp_path / "page.html", "<p>hi</p>")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "page.html").stat().st_mode & 0o777 == 0o666 & ~mask
