"""What a loaded model reports about itself (``edgekit info``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What ``edgekit info`` shows; ``to_dict()`` is its JSON."""

    path: str
    name: str
    fingerprint: str  # the model version
    parents: tuple[str, ...]  # the versions it was aggregated from, newest first (empty: a converted file)
    signed: bool  # the file carries a server's signature (``origin`` says whether this device trusts it)
    origin: str  # what vouches for the file: "bundled", "installed", "signed", or nothing ("local")
    quantization: str
    compat: str
    runtime: str
    vocab_size: int
    context_length: int
    feature_dim: int
    personal_slots: int
    personal_words: int
    personal_examples: int  # examples learned since the last export or install
    state_file: str | None
    file_bytes: int | None

    def to_dict(self) -> dict:
        return asdict(self)
