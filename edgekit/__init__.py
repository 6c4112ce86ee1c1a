"""edgekit: on-device next-word prediction that learns from its user.

    from edgekit import EdgeModel, Journal
    m = EdgeModel.load()              # the bundled English model
    m.suggest("see you tomo")         # -> tomorrow, ...
    m.personalize(["my own text"])    # trains the last layer on the device

    j = Journal(m.state_dir / "typed.txt")
    j.append("a sent message")        # the user's typing, kept on the device (0600)
    j.learn(m)                        # personalize on the lines not learned yet
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Lazy, so that `import edgekit` stays fast and light on a device: name -> module.
_EXPORTS = {
    "EdgeModel": "model", "ModelInfo": "model", "Suggestion": "suggest", "TrainConfig": "personal.train",
    "PersonalizeResult": "personal.result", "Evaluation": "metrics", "Journal": "journal",
    "EdgekitError": "errors", "ModelFileError": "errors", "StateError": "errors", "UpdateError": "errors",
    "KeyFileError": "errors", "NotEnoughTextError": "errors", "TextFileError": "errors",
    "RuntimeMissingError": "errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
