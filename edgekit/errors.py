"""The errors edgekit raises on purpose, under one base class.

``except EdgekitError`` catches every problem edgekit diagnosed itself (a
corrupt file, a foreign state, a tampered update, text it cannot learn
from); anything else is a bug. Each class is also a ``ValueError`` (or
``RuntimeError``), so code written against the built-in types keeps working.
The message always names the problem and, where there is one, the fix.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class of every error edgekit raises on purpose."""


class ModelFileError(EdgekitError, ValueError):
    """The file is not a usable edgekit model."""


class StateError(EdgekitError, ValueError):
    """Personal state that cannot be used."""


class UpdateError(EdgekitError, ValueError):
    """A federated update is refused. ``reason`` is a short stable code, the message says why.

    Codes: ``format``, ``version``, ``too-large``, ``wrong-model``, ``wrong-shape``,
    ``wrong-key``, ``policy``, ``replay``, ``decrypt``, ``payload``, ``not-finite``,
    ``over-norm``, ``io``.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class KeyFileError(EdgekitError, ValueError):
    """A key file that is missing, of the wrong kind, or cannot be decrypted."""


class TextFileError(EdgekitError, ValueError):
    """A text file edgekit cannot read as text: missing, binary, not UTF-8, or a broken ``.xz``."""


class NotEnoughTextError(EdgekitError, ValueError):
    """The text given to learn from or to evaluate on has nothing usable in it."""


class RuntimeMissingError(EdgekitError, RuntimeError):
    """No usable TensorFlow Lite interpreter package is installed."""
