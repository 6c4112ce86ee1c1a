"""What a keyboard process loads: ``import edgekit.model`` must not pull in the signature checks, nor the
whole TensorFlow Lite schema."""
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


def test_suggesting_loads_neither_the_tflite_package_nor_what_only_learning_or_a_default_folder_needs(tmp_path):
    """The ``tflite`` package imports all of its ~190 schema classes (2.9 MB) at once: edgekit reads the dozen
    tables it checks with its own readers (``edgekit.flatbuffer_schema``). ``threadpoolctl`` (host products
    in learning) and ``platformdirs`` (the default state folder) load when first needed."""
    code = ("import sys\nfrom edgekit.model import EdgeModel\n"
            "EdgeModel.load(state_dir=sys.argv[1]).suggest('see you ')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tflite', 'threadpoolctl', 'platformdirs'}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_dropped_model_is_freed_without_waiting_for_the_garbage_collector():
    """Nothing in a model refers back to it: dropping it frees its interpreters at once, not at the next
    cyclic collection (which a keyboard process may not run for a long while)."""
    import gc
    import weakref

    from edgekit.model import EdgeModel

    m = EdgeModel.load(stateless=True)
    m.suggest("see you ")
    gone = weakref.ref(m)
    gc.disable()
    try:
        del m
        assert gone() is None
    finally:
        gc.enable()
