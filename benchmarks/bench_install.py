"""A global version from a federated round runs at the bundled file's speed.

    python -m benchmarks.bench_install [--repeats 5]

Makes version 2 of the bundled int8 model the way ``edgekit aggregate`` does:
two devices personalize on halves of the SMS text, their contributions
(clipped to the default norm) are averaged, and ``install_delta`` writes the
new head into the flatbuffer, its int8 scale checked on held-out email text.
For contrast it also writes the same version with the head as ``head.npz``
(how versions shipped before). Then ``suggest()`` latency next to a bare
invoke for each file, in fresh processes (``bench_runtime``'s measurement;
the quietest of ``--repeats`` runs), and the int8 head's held-out top-3
next to its float head.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.bench_runtime import CONTEXT_TEXT, PERSONAL_TEXT, in_subprocess, overhead, quietest

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "edgekit" / "assets" / "edgekit-en-int8.tflite"


def make_versions(folder: Path) -> tuple[Path, Path, dict]:
    """Version 2 with its head in the flatbuffer, the same version as head.npz, and the int8 check."""
    from edgekit.federated import DEFAULT_CLIP_NORM
    from edgekit.federated.hazmat.delta import clip_delta
    from edgekit.federated.install import apply_delta, float_head, install_delta
    from edgekit.model import EdgeModel
    from edgekit.modelfile import read_model_file, write_model_file
    from edgekit.tokenizer import read_text_lines

    lines = PERSONAL_TEXT.read_text(encoding="utf-8").splitlines()
    deltas = []
    for i, half in enumerate((lines[: len(lines) // 2], lines[len(lines) // 2 :])):
        device = EdgeModel.load(BASE, state_dir=folder / f"device{i}", unsigned_local=True)
        device.personalize(half)
        deltas.append(clip_delta(*device.head_delta(), DEFAULT_CLIP_NORM))
    delta = (np.mean([d[0] for d in deltas], axis=0), np.mean([d[1] for d in deltas], axis=0))
    heldout = list(read_text_lines(CONTEXT_TEXT))[1000:3000]  # not the contexts the latency runs on
    flat = folder / "v2-flatbuffer.tflite"
    new = install_delta(BASE, delta, flat, heldout=heldout)
    npz = folder / "v2-head-npz.tflite"
    base = read_model_file(BASE)
    write_model_file(npz, replace(base, metadata=new.metadata, head=apply_delta(float_head(BASE), delta)))
    return flat, npz, new.metadata["head_storage"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        flat, npz, check = make_versions(Path(tmp))
        files = {"bundled int8": BASE, "v2, head in the flatbuffer": flat, "v2, head as head.npz": npz}
        runs = {name: [in_subprocess(path, full=False) for _ in range(args.repeats)] for name, path in files.items()}
    rows = {name: quietest(r) for name, r in runs.items()}
    print(f"{'file':28} {'bare p50 us':>12} {'suggest p50 us':>15} {'suggest / bare':>15}")
    for name, r in rows.items():
        print(f"{name:28} {r['bare_us'][0]:12.0f} {r['suggest_us'][0]:15.0f} {1 + overhead(r):14.2f}x")
    print(f"int8 head scale {check['int8_scale']:.4g}: held-out top-3 {check['int8_top3']:.2%} "
          f"vs float head {check['float_top3']:.2%} ({check['scales_tried']} scale(s) tried)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "int8_check": check}, indent=1))


if __name__ == "__main__":
    main()
