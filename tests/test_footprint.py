"""What a keyboard process loads: ``import edgekit.model`` must not pull in the signature checks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_loading_a_model_does_not_import_cryptography():
    """``cryptography`` (about 16 MB resident with what it loads) is only for installing a signed version."""
    code = ("import sys\nfrom edgekit.model import EdgeModel\nEdgeModel.load(stateless=True).suggest('see you ')\n"
            "print('cryptography' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
