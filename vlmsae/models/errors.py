"""Named errors of the model registry: they say what was asked, where we looked and what to do."""

from __future__ import annotations


class UnknownModelError(ValueError):
    """A model name that is neither an alias nor a ``backend:spec`` form the registry knows."""

    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, list(known)
        super().__init__(
            f"unknown model {name!r}. Known names: {', '.join(self.known)}; "
            "or 'open_clip:<arch>/<pretrained tag or checkpoint path>' "
            "or 'hf:<repo id or local dir>'."
        )


class ModelNotFoundError(FileNotFoundError):
    """Weights (or config/tokenizer files) of a known model are not on this machine.

    Raised instead of the backend library's deep stack trace; nothing is downloaded because every
    load runs with ``local_files_only=True`` (the ``HF_HUB_OFFLINE=1`` behaviour, made explicit).
    """

    def __init__(self, model: str, looked_in: list[str], fetch: str, reason: str = ""):
        self.model, self.looked_in, self.fetch, self.reason = model, list(looked_in), fetch, reason
        where = "\n".join(f"  - {p}" for p in self.looked_in)
        detail = f"\n(library said: {reason})" if reason else ""
        super().__init__(
            f"weights for model {model!r} are not on this machine. Looked in:\n{where}\n"
            f"Fetch them on a machine with internet, then copy the cache folder here:\n  {fetch}\n"
            f"or pass a local path instead of a name.{detail}"
        )
