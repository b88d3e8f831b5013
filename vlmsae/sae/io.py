"""Load an SAE saved by `SAE.save`: `config.json` names the class, `model.safetensors` holds the tensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file

from .base import FORMAT_VERSION, SAE
from .batchtopk import BatchTopKSAE
from .jumprelu import JumpReLUSAE
from .relu import ReLUSAE
from .topk import TopKSAE

SAE_CLASSES: dict[str, type[SAE]] = {
    cls.__name__: cls for cls in (TopKSAE, BatchTopKSAE, JumpReLUSAE, ReLUSAE)
}
_SUMMARY_KEYS = {"class", "version", "threshold"}


def load_sae(directory: str | os.PathLike, device: str = "cpu") -> SAE:
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    if not config_path.exists() or not weights_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a saved SAE: it needs config.json and model.safetensors (write them with sae.save(dir))"
        )
    config = json.loads(config_path.read_text())
    name = config.get("class")
    if name not in SAE_CLASSES:
        raise ValueError(f"{config_path}: unknown SAE class {name!r}; known: {sorted(SAE_CLASSES)}")
    if config.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{config_path}: format version {config['version']} is newer than this vlmsae ({FORMAT_VERSION}); upgrade vlmsae")
    kwargs = {key: value for key, value in config.items() if key not in _SUMMARY_KEYS}
    sae = SAE_CLASSES[name](**kwargs)
    sae.load_state_dict(load_file(str(weights_path)))
    return sae.to(device)
