"""Computations behind the book's figures, one module per figure group.

Each module turns cached pipeline results (`vlmsae.pipeline`: embeddings, SAEs, codes) into the
numbers a notebook plots, itself cached with `vlmsae.cache.get_or_compute`, so `book/claims.md`
can call the same functions as the figure notebooks and get the same values without rerunning them.

Shared conventions of every notebook:
- `DEFAULT_STEPS` / `QUICK_STEPS`: training steps of the shared seed SAEs
  `pipeline.train(emb, "batchtopk", c=c, k=k, seed=s, steps=...)`; every notebook passes the same
  value so the SAEs of figure 3 serve figures 2, 5, 6 and 7.
- `record_claims(output_dir, values)`: the "measured in this build" numbers of a notebook, written
  to `<output_dir>/claims.json`.

Nothing heavy is imported here: the modules import torch and the pipeline themselves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

DEFAULT_STEPS = 3000
QUICK_STEPS = 400

CLAIMS_FILE = "claims.json"


def _json_value(value):
    """A JSON-safe copy: numpy scalars/arrays become Python numbers/lists, NaN/inf become None."""
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"claim value of type {type(value).__name__} is not JSON-able: pass numbers, strings, lists or dicts")


def record_claims(output_dir: str | os.PathLike, values: dict) -> Path:
    """Write a notebook's measured claim values to `<output_dir>/claims.json` (atomically).

    `values` maps a claim name to a number, string, list or dict (numpy values are converted;
    NaN is stored as null). Returns the file's path.
    """
    from ..atomic import atomic_write_text

    if not isinstance(values, dict):
        raise ValueError(f"record_claims needs a dict of claim name -> value, got {type(values).__name__}")
    path = Path(output_dir) / CLAIMS_FILE
    atomic_write_text(path, json.dumps(_json_value(values), indent=1, sort_keys=True) + "\n")
    return path
