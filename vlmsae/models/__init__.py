"""Model registry: ``load(name)`` gives an ``EmbeddingModel`` for any supported VLM.

Names:

* ``toyclip``: the embedded default, a small contrastive model trained on the ``shapes`` world;
* the paper's four models by alias: ``clip``, ``siglip``, ``siglip2``, ``aimv2``;
* ``open_clip:<arch>/<pretrained tag or local checkpoint path>``, e.g. ``open_clip:ViT-B-32/openai``;
* ``hf:<repo id or local dir>`` for transformers CLIPModel, SiglipModel, Siglip2Model, Aimv2Model.

Weights are read from the local Hugging Face / open_clip cache or a path, never downloaded; a
missing file raises ``ModelNotFoundError`` saying where we looked and how to fetch it.
"""

from __future__ import annotations

from pathlib import Path

from .base import EmbeddingModel
from .errors import ModelNotFoundError, UnknownModelError

#: the paper's four models (see shared/paper/NOTES.md)
ALIASES = {
    "clip": "hf:openai/clip-vit-base-patch32",
    "siglip": "hf:google/siglip-base-patch16-224",
    "siglip2": "hf:google/siglip2-base-patch16-224",
    "aimv2": "hf:apple/aimv2-large-patch14-224-lit",
}


def _load_toyclip(device, **kwargs):
    from .toyclip import load_toyclip  # imported here: the default model must not slow other loads

    return load_toyclip(device=device, **kwargs)


def _load_open_clip(spec, device, **kwargs):
    from .open_clip_adapter import load_open_clip

    return load_open_clip(spec, device=device, **kwargs)


def _load_hf(spec, device, **kwargs):
    from .hf_adapter import load_hf

    return load_hf(spec, device=device, **kwargs)


_BACKENDS = {"open_clip": _load_open_clip, "hf": _load_hf}


def known_names() -> list[str]:
    return ["toyclip", *ALIASES]


def resolve(name: str) -> str:
    """The canonical name of ``name``, checked against the known forms: aliases expanded and local
    paths made absolute, so that one name means one model wherever it is asked from (it keys the
    embedding cache). Nothing is loaded."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(repr(name), known_names())
    name = ALIASES.get(name, name)
    backend, sep, spec = name.partition(":")
    if name == "toyclip":
        return name
    if not (sep and backend in _BACKENDS and spec):
        raise UnknownModelError(name, known_names())
    head, slash, path = spec.partition("/") if backend == "open_clip" else ("", "", spec)
    local = Path(path).expanduser()
    if path and (local.is_dir() if backend == "hf" else local.is_file()):
        return f"{backend}:{head}{slash}{local.resolve()}"
    return name


def load(name: str, device="cpu", **kwargs) -> EmbeddingModel:
    """Load model ``name`` on ``device``; extra keyword arguments go to the back end
    (``precision``, ``cache_dir``; ``revision`` for hf)."""
    name = resolve(name)
    if name == "toyclip":
        return _load_toyclip(device, **kwargs)
    backend, _, spec = name.partition(":")
    return _BACKENDS[backend](spec, device, **kwargs)


__all__ = ["ALIASES", "EmbeddingModel", "ModelNotFoundError", "UnknownModelError", "known_names", "load", "resolve"]
