"""Where a model file's trust comes from, checked on the bytes ``read_model_file`` parses.

A model file's own hashes sit in its unauthenticated zip part: anyone who can
write the file can rewrite them. So trust must come from outside the file:

- the files edgekit ships (``edgekit/assets``) are pinned here by SHA-256:
  the installed package is the trust anchor, and a bundled file that does
  not match (an edited head bias, a flipped byte) is refused;
- any other file is ``"local"``: it passes the structural checks (it cannot
  crash or exhaust the device) but nothing here vouches for what it predicts.
  Above this module, ``EdgeModel.load`` (``installed.load_origin``) accepts
  such a file when it carries a signature by a key the device trusts
  (``"signed"``), when it is the installed version (``"installed"``), or
  when the caller asks for it (``unsigned_local=True``); otherwise it refuses it.

Re-pin after re-converting a bundled model: ``sha256sum edgekit/assets/*.tflite``
(``tests/test_hostile_models.py`` fails and prints the new values until then).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelFileError

ASSETS = Path(__file__).parent / "assets"
BUNDLED_SHA256 = {
    "edgekit-en-dynamic.tflite": "c9635e42923380d214c4a07017551083d9e6a4b8d2b919a423cd61273ca22ba3",
    "edgekit-en-int8.tflite": "5c36f54cdd8c261c9e3836e0faab31169da7c47758f21ce9fe53c203fc433350",
}


def origin(path: Path, data: bytes) -> str:
    """``"bundled"`` for a file edgekit ships whose bytes match its pin, else ``"local"``; a mismatch is refused."""
    try:
        bundled = path.resolve().parent == ASSETS.resolve() and path.name in BUNDLED_SHA256
    except OSError:
        bundled = False
    if not bundled:
        return "local"
    if hashlib.sha256(data).hexdigest() != BUNDLED_SHA256[path.name]:
        raise ModelFileError(f"{path}: this bundled model does not match the SHA-256 edgekit ships with "
                             "(edited or damaged); reinstall edgekit")
    return "bundled"
