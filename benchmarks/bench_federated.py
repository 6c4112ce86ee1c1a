"""Federated benchmark: export time, encoding cost, aggregation throughput and memory.

    python benchmarks/bench_federated.py            # 1,000 updates, real head size
    python benchmarks/bench_federated.py --n 100    # quicker

Head size comes from the bundled model (edgekit/assets/*.tflite) when present,
else F=128 x V=10,005 shared rows. Update files are sealed with distinct
headers (fresh ids) over a few distinct payloads, so making 1,000 of them
does not take 1,000 compressions. Each aggregation runs in a fresh process so
its peak RSS is its own; files were just written, so they come from the page
cache (the numbers are CPU cost, not disk speed). On a shared machine, wall
time depends on the load: "upd/CPU-s" (updates per second of this process's
CPU time) is the stable number.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.federated import DEFAULT_CLIP_NORM, UpdatePolicy, aggregate_updates, key_id  # noqa: E402
from edgekit.federated.hazmat import (UpdateHeader, decode_delta, delta_norm, encode_delta,  # noqa: E402
                                      make_update, new_update_id, pack_payload, privatize, seal)

FINGERPRINT = "ab" * 16
DISTINCT_PAYLOADS = 8
# The library default, so the benchmark measures what users run; the server's
# policy (in the child) and every sealed header must agree on it.
CLIP_NORM = DEFAULT_CLIP_NORM


def head_shape() -> tuple[tuple[int, int], str]:
    from edgekit.modelfile import read_model_file

    for path in sorted((ROOT / "edgekit" / "assets").glob("*.tflite")):
        meta = read_model_file(path).metadata
        return (meta["feature_dim"], meta["vocab_size"] - meta.get("personal_slots", 0)), path.name
    return (128, 10005), "default"


def synthetic_delta(rng: np.random.Generator, shape: tuple[int, int]):
    """Heavy-tailed like a real personal delta: a few words move a lot, most barely.

    The raw norm is far above the clip norm, so every delta leaves ``privatize``
    at exactly ``CLIP_NORM``: the size a device's full personalization reaches.
    """
    col = rng.pareto(1.5, shape[1]).astype(np.float32)
    dW = rng.normal(0, 1, shape).astype(np.float32) * col
    return privatize(dW, rng.normal(0, 1, shape[1]).astype(np.float32) * col, CLIP_NORM)


def bench_export(shape, public, rng) -> list[dict]:
    rows = []
    dW, db = synthetic_delta(rng, shape)
    W = rng.normal(0, 0.05, shape).astype(np.float32)
    feats = rng.normal(0, 1, (300, shape[0])).astype(np.float32)
    top3 = _top3(feats, W, (dW, db))
    for encoding in ("float16", "int8"):
        times, cpu, size = [], [], 0
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            size = len(make_update(dW, db, public_key=public, model_fingerprint=FINGERPRINT, n_examples=10,
                                   clip_norm=CLIP_NORM, encoding=encoding))
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        got = decode_delta(encode_delta(dW, db, encoding), shape, encoding)
        rel = delta_norm(got[0] - dW, got[1] - db) / delta_norm(dW, db)
        agree = np.mean((_top3(feats, W, got) == top3).all(axis=1))
        rows.append(dict(encoding=encoding, export_s=min(times), export_cpu_s=min(cpu), bytes=size, rel_l2_error=rel, top3_same=agree))
    return rows


def _top3(feats, W, delta):
    return np.argsort(-(feats @ (W + delta[0]) + delta[1]), axis=1)[:, :3]


def write_updates(folder: Path, n: int, shape, public, rng) -> int:
    payloads = [pack_payload(*synthetic_delta(rng, shape), "float16", CLIP_NORM) for _ in range(DISTINCT_PAYLOADS)]
    total = 0
    for i in range(n):
        header = UpdateHeader(model_fingerprint=FINGERPRINT, update_id=new_update_id(), n_examples=1 + i % 50,
                              clip_norm=CLIP_NORM, noise_multiplier=0.0, encoding="float16", shape=shape,
                              key_id=key_id(public))
        data = seal(header, payloads[i % DISTINCT_PAYLOADS], public)
        (folder / f"{i:05d}.edgekit-update").write_bytes(data)
        total += len(data)
    return total


def child(args) -> None:
    """One aggregation in this (fresh) process; prints a JSON line."""
    private = serialization.load_pem_private_key(Path(args.key).read_bytes(), None)
    shape = tuple(args.shape)
    paths = sorted(Path(args.dir).glob("*.edgekit-update"))[: args.n]
    policy = UpdatePolicy(FINGERPRINT, shape, key_id(private.public_key()), clip_norm=CLIP_NORM)
    tracemalloc.start()
    t, cpu = time.perf_counter(), time.process_time()
    result = aggregate_updates(paths, private, policy, mode=args.mode, workdir=args.dir)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    print(json.dumps(dict(mode=args.mode, n=len(paths), accepted=result.accepted, seconds=elapsed, cpu_seconds=cpu,
                          mb=sum(p.stat().st_size for p in paths) / 1e6, traced_peak_mb=peak / 1e6,
                          max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def run_child(folder: Path, key: Path, shape, n: int, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--dir", str(folder), "--key", str(key), "--n", str(n),
           "--mode", mode, "--shape", *map(str, shape)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # the child's traceback says why; without it only the exit code would show
        sys.exit(f"aggregation child ({mode}, {n} updates) failed with exit code {done.returncode}:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="updates to aggregate with FedAvg")
    p.add_argument("--robust-n", type=int, default=200, help="updates for the robust modes (4*D bytes of disk each)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fedavg", help=argparse.SUPPRESS)
    p.add_argument("--shape", type=int, nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    shape, source = head_shape()
    dim = (shape[0] + 1) * shape[1]
    rng = np.random.default_rng(0)
    private = X25519PrivateKey.generate()
    public = private.public_key()
    print(f"head {shape[0]} x {shape[1]} shared (+ bias): D = {dim:,} values ({source})\n")

    print(f"{'encoding':<9} {'export s':>9} {'CPU s':>7} {'bytes':>11} {'rel L2 err':>11} {'top-3 same':>11}")
    for r in bench_export(shape, public, rng):
        print(f"{r['encoding']:<9} {r['export_s']:>9.3f} {r['export_cpu_s']:>7.3f} {r['bytes']:>11,} "
              f"{r['rel_l2_error']:>11.2e} {r['top3_same']:>11.1%}")

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        folder = Path(tmp)
        key = folder / "server.key"
        key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        t = time.perf_counter()
        total = write_updates(folder, max(args.n, args.robust_n), shape, public, rng)
        print(f"\nsealed {max(args.n, args.robust_n):,} update files, {total / 1e6:,.0f} MB, "
              f"in {time.perf_counter() - t:.1f} s\n")
        runs = [(n, "fedavg") for n in sorted({max(1, args.n // 10), args.n})]
        runs += [(args.robust_n, m) for m in ("median", "trimmed-mean")]
        print(f"{'mode':<13} {'updates':>8} {'wall s':>7} {'updates/s':>10} {'MB/s':>7} {'CPU s':>7} "
              f"{'upd/CPU-s':>10} {'traced peak MB':>15} {'max RSS MB':>11}")
        for n, mode in runs:
            r = run_child(folder, key, shape, n, mode)
            print(f"{mode:<13} {r['n']:>8,} {r['seconds']:>7.1f} {r['n'] / r['seconds']:>10.1f} "
                  f"{r['mb'] / r['seconds']:>7.1f} {r['cpu_seconds']:>7.1f} {r['n'] / r['cpu_seconds']:>10.1f} "
                  f"{r['traced_peak_mb']:>15.1f} {r['max_rss_mb']:>11.1f}")
    print(f"\nrobust modes also keep a {4 * dim / 1e6:.1f} MB-per-update float32 row in a temporary file on disk.")


if __name__ == "__main__":
    main()
