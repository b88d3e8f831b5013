"""transformers back end: ``hf:<repo id or local dir>`` for CLIP, SigLIP, SigLIP2 and AIMv2.

Image embedding = ``model.get_image_features(**image_processor(images))``, text embedding =
``model.get_text_features(**tokenizer(texts))``: each tower's pooled output after its projection
(SigLIP has no projection: the pooled head output is the shared space).

Preprocessing uses the saved image processor and tokenizer directly, not the combined processor:
``Siglip2Processor`` replaces the saved ``max_num_patches``, ``patch_size`` and text
``max_length`` by its class defaults (256, 16, 64), so the saved values are passed explicitly.
SigLIP-family text towers pool the *last* position, so their texts are padded to the fixed
length they were trained with (``padding="max_length"``, the text config's
``max_position_embeddings``), and SigLIP gets no text attention mask (it was trained without
one); CLIP and AIMv2 pool the EOS token and pad to the longest text.

AIMv2's text tower is causal, but transformers builds its causal mask only when the batch has
padding (an all-ones mask is dropped and its attention is not flagged causal), so a batch of
equal-length texts would be embedded bidirectionally; its text tower therefore runs eager
attention, which always applies the causal mask.

Everything loads with ``local_files_only=True``: weights come from the local Hugging Face cache
or the given folder, and a missing file raises ``ModelNotFoundError``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import EmbeddingModel, hf_cache_dir, hub_offline
from .errors import ModelNotFoundError

#: config.model_type -> (transformers model class, text padding, text inputs passed to the model)
FAMILIES = {
    "clip": ("CLIPModel", "longest", ("input_ids", "attention_mask")),
    # SigLIP was trained attending to its padding (no text mask), as transformers < 5 called it;
    # transformers >= 5 tokenizers return a mask, which would change the pooled last position
    "siglip": ("SiglipModel", "max_length", ("input_ids",)),
    "siglip2": ("Siglip2Model", "max_length", ("input_ids", "attention_mask")),
    "aimv2": ("Aimv2Model", "longest", ("input_ids", "attention_mask")),
}


def _features(out) -> torch.Tensor:
    # transformers < 5 returns the tensor, >= 5 a ModelOutput whose pooler_output is the projection
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFModel(EmbeddingModel):
    def __init__(self, model, tokenizer, image_processor, name: str, device: torch.device, precision: str = "auto"):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.name, self.device, self.precision = name, device, precision
        model_type = model.config.model_type
        self.family = model_type
        _, padding, self._text_inputs = FAMILIES[model_type]
        text_length = int(model.config.text_config.max_position_embeddings)
        self._text_kwargs = {"padding": "max_length" if padding == "max_length" else True,
                             "truncation": True, "max_length": text_length}
        self._image_kwargs = {}
        if model_type == "siglip2":
            self._image_kwargs = {"max_num_patches": int(image_processor.max_num_patches),
                                  "patch_size": int(image_processor.patch_size)}
        self.dim = self.probe_dim()

    def preprocess_images(self, images: list) -> dict[str, torch.Tensor]:
        out = self.image_processor([im.convert("RGB") for im in images], return_tensors="pt", **self._image_kwargs)
        return {key: value for key, value in out.items() if isinstance(value, torch.Tensor)}

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer(list(texts), return_tensors="pt", **self._text_kwargs)
        return {key: out[key] for key in self._text_inputs if key in out}

    def _forward_images(self, inputs):
        return _features(self.model.get_image_features(**inputs))

    def _forward_texts(self, inputs):
        return _features(self.model.get_text_features(**inputs))


def load_hf(spec: str, device: str | torch.device = "cpu", precision: str = "auto",
            cache_dir: str | None = None, revision: str | None = None) -> HFModel:
    """Load a CLIP / SigLIP / SigLIP2 / AIMv2 checkpoint from a local folder or the local HF cache."""
    import transformers

    local = Path(spec).expanduser()
    is_dir = local.is_dir()
    name = f"hf:{local.resolve() if is_dir else spec}"  # absolute: the name keys the embedding cache
    where = [str(local)] if is_dir else [f"{hf_cache_dir(cache_dir)} (repo {spec})"]
    fetch = (f"huggingface-cli download {spec}" if not is_dir else
             "save the model, tokenizer and image processor there with save_pretrained(...)")
    source = str(local) if is_dir else spec
    kwargs = {"local_files_only": True, "cache_dir": cache_dir, "revision": revision}
    try:
        with hub_offline():
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
            model_type = config.model_type
            if model_type not in FAMILIES:
                raise ValueError(
                    f"model {name!r} has model_type {model_type!r}; the hf adapter supports "
                    f"{', '.join(FAMILIES)}. Use open_clip:<arch>/<path> for other contrastive models."
                )
            model_cls = getattr(transformers, FAMILIES[model_type][0])
            attention = {"text_config": "eager", "vision_config": "sdpa", "": "sdpa"} if model_type == "aimv2" else None
            model = model_cls.from_pretrained(source, dtype=torch.float32, attn_implementation=attention, **kwargs)
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
            image_processor = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelNotFoundError(name, where, fetch, reason=first) from None
    device = torch.device(device)
    model = model.to(device).eval()
    return HFModel(model, tokenizer, image_processor, name=name, device=device, precision=precision)
