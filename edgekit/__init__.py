"""edgekit: on-device next-word prediction that learns from its user.

    from edgekit import EdgeModel
    m = EdgeModel.load()              # the bundled English model
    m.suggest("see you tomo")         # -> tomorrow, ...
    m.personalize(["my own text"])    # trains the last layer on the device

    from edgekit.journal import Journal
    j = Journal(m.state_dir / "typed.txt")
    j.append("a sent message")        # the user's typing, kept on the device (0600)
    j.learn(m)                        # personalize on the lines not learned yet
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["EdgeModel", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import edgekit` stays fast and light on a device.
    if name == "EdgeModel":
        from .model import EdgeModel

        return EdgeModel
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
