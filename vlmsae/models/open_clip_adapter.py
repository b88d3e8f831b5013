"""open_clip back end: ``open_clip:<arch>/<pretrained tag or local checkpoint path>``.

Image embedding = ``model.encode_image(preprocess(image))``, text embedding =
``model.encode_text(tokenizer(text))``: the projected outputs of both towers.

A pretrained tag is resolved to a file already in the local cache (Hugging Face Hub cache for
``hf_hub`` tags, ``~/.cache/clip`` for URL tags) and loaded from that path, so nothing is ever
downloaded; the tag's preprocessing (mean, std, interpolation, resize mode) and QuickGELU choice
are passed explicitly because open_clip only applies them itself when it downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import EmbeddingModel, hf_cache_dir, hub_offline
from .errors import ModelNotFoundError

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


class OpenClipModel(EmbeddingModel):
    def __init__(self, model, preprocess, tokenizer, name: str, device: torch.device, precision: str = "auto"):
        self.model, self._preprocess, self._tokenizer = model, preprocess, tokenizer
        self.name, self.device, self.precision = name, device, precision
        self.dim = self.probe_dim()

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([self._preprocess(im.convert("RGB")) for im in images])}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self._tokenizer(list(texts))}

    def _forward_images(self, inputs):
        return self.model.encode_image(inputs["pixel_values"])

    def _forward_texts(self, inputs):
        return self.model.encode_text(inputs["input_ids"])


def resolve_checkpoint(arch: str, pretrained: str, cache_dir: str | None = None) -> tuple[str, dict]:
    """Local file for ``pretrained`` (a path or a tag of ``arch``) and the tag's config ({} for paths).

    Raises ``ModelNotFoundError`` naming every place looked at when the file is not there.
    """
    import open_clip
    from open_clip import pretrained as oc_pretrained

    name = f"open_clip:{arch}/{pretrained}"
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not tag_cfg:
        path = Path(pretrained).expanduser().resolve()
        if path.is_file():
            return str(path), {}
        if os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
            raise ModelNotFoundError(name, [str(path)], "copy the checkpoint file to that path")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(
            f"{pretrained!r} is neither a pretrained tag of open_clip arch {arch!r} nor a checkpoint file. "
            f"Tags of {arch}: {', '.join(tags) or 'none'}; or pass a path to a .pt/.bin/.safetensors file."
        )
    looked_in: list[str] = []
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)  # 'org/repo/' names the default file
        filename = filename or oc_pretrained.HF_WEIGHTS_NAME
        for candidate in [*oc_pretrained._get_safe_alternatives(filename), filename]:
            found = try_to_load_from_cache(repo, candidate, cache_dir=cache_dir)
            looked_in.append(f"{hf_cache_dir(cache_dir)} (repo {repo}, file {candidate})")
            if isinstance(found, str):
                return found, tag_cfg
        fetch = f"huggingface-cli download {repo} {filename}"
    else:
        url = tag_cfg.get("url", "")
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        looked_in.append(str(target))
        if target.is_file():
            return str(target), tag_cfg
        fetch = f"python -c \"import open_clip; open_clip.create_model_and_transforms('{arch}', pretrained='{pretrained}')\""
    raise ModelNotFoundError(name, looked_in, fetch)


def load_open_clip(spec: str, device: str | torch.device = "cpu", precision: str = "auto",
                   cache_dir: str | None = None) -> OpenClipModel:
    """Load ``<arch>/<tag or path>`` from local files only."""
    import open_clip

    arch, _, pretrained = spec.partition("/")
    if not arch or not pretrained:
        raise ValueError(
            f"open_clip model spec {spec!r} must be '<arch>/<pretrained tag or checkpoint path>', "
            "e.g. 'open_clip:ViT-B-32/openai'"
        )
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip architecture {arch!r}; see open_clip.list_models() "
            "(a custom one must be registered first with open_clip.add_model_config)"
        )
    checkpoint, tag_cfg = resolve_checkpoint(arch, pretrained, cache_dir)
    device = torch.device(device)
    overrides = {key_out: tag_cfg[key_in] for key_in, key_out in
                 [("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                  ("resize_mode", "image_resize_mode")] if key_in in tag_cfg}
    # a checkpoint path is named absolutely: the name keys the embedding cache
    name = f"open_clip:{arch}/{checkpoint if not tag_cfg else pretrained}"
    try:
        with hub_offline():
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=checkpoint, device=device, weights_only=True,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)), cache_dir=cache_dir, **overrides)
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except OSError as err:  # a tokenizer or tower config that lives on the hub and is not cached
        raise ModelNotFoundError(name, [hf_cache_dir(cache_dir)],
                                 f"python -c \"import open_clip; open_clip.get_tokenizer('{arch}')\"",
                                 reason=str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    model.eval()
    return OpenClipModel(model, preprocess, tokenizer, name=name, device=device, precision=precision)
