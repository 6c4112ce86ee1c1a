"""Nightly on the device: learn from new text in a folder, then seal an update for the server.

    python nightly.py --text-dir ~/edgekit/text \\
        [--outbox ~/edgekit/outbox --server-key ~/edgekit/server.key.pub] \\
        [--flower-text ~/edgekit/flower-text.txt] [--model FILE] [--state-dir DIR]

1. Personalizes on the ``*.txt`` files of ``--text-dir`` it has not learned
   from yet (a ledger of their SHA-256 in the state folder). Learning twice
   from one text would count it twice in the federated update.
2. With ``--outbox``, when anything was learned since the previous export
   (the keyboard's learning too): writes the sealed update (clipped,
   optionally noised, HPKE-encrypted to the server key) as
   ``<fingerprint>-<UTC time>-<random>.edgekit-update`` (the model fingerprint's
   first 16 hex digits), atomically, and only then
   consumes the contribution (a failed write loses nothing: the next run
   exports it). Updates never overlap, so older unsent ones stay in the
   outbox and each must be delivered: a deleted one is lost to the federation.
3. With ``--flower-text``: writes all the folder's text into that one file,
   which a Flower SuperNode reads (docs/deploy-flower.md, ``text=`` node config).

Run by ``edgekit-nightly.service`` (a systemd user unit) from ``edgekit-nightly.timer``.
"""
from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from common import add_model_arguments, describe, load_model
from edgekit import EdgeModel
from edgekit.atomic import atomic_write_bytes
from edgekit.federated import DEFAULT_CLIP_NORM, UPDATE_SUFFIX, device_key, export_update, load_public_key
from edgekit.tokenizer import read_text_lines

LEDGER_NAME = "nightly-learned.txt"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        key = load_public_key(args.server_key) if args.server_key else None  # a bad key fails before learning
        model = load_model(args)
        learn_new_text(model, args.text_dir)
        if key is not None and model.n_examples:  # also the keyboard's learning, or a failed export's
            print(f"wrote {export(model, key, args)}")
        if args.flower_text:
            gather(args.text_dir, args.flower_text)
            print(f"wrote {args.flower_text} for the Flower SuperNode")
    except (ValueError, OSError) as e:  # a bad key, model or folder: one clear line in the journal
        raise SystemExit(f"nightly: {e}") from None
    return 0


def learn_new_text(model: EdgeModel, folder: Path) -> None:
    """Personalize on the folder's unlearned files (what it learns joins the next update, adopted or not)."""
    ledger = model.state_dir / LEDGER_NAME
    learned = set(ledger.read_text().split()) if ledger.exists() else set()
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.glob("*.txt"))}
    texts = dict(readable(path for path, digest in digests.items() if digest not in learned))
    lines = [line for text in texts.values() for line in text]
    if not texts:
        print(f"nothing new to learn from in {folder}")
        return
    try:
        report = model.personalize(lines)
    except ValueError as e:  # too little text: the files stay unlearned until there is more
        print(f"not learning yet: {e}")
        return
    print(describe(report))
    learned |= {digests[path] for path in texts}
    atomic_write_bytes(ledger, "".join(f"{d}\n" for d in sorted(learned)).encode())


def export(model: EdgeModel, key: X25519PublicKey, args: argparse.Namespace) -> Path:
    """Seal the update under a unique name; older unsent ones stay, they hold other text.

    The name is chosen first so that ``export_update`` writes the file before
    it consumes the contribution.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = args.outbox / f"{model.fingerprint[:16]}-{stamp}-{secrets.token_hex(16)}{UPDATE_SUFFIX}"
    export_update(model, key, path, clip_norm=args.clip_norm, noise_multiplier=args.noise_multiplier,
                  device_key=device_key(model.state_dir)[0])  # the server counts one update per enrolled device
    return path


def gather(folder: Path, out: Path) -> None:
    """All the folder's text in one file, replaced atomically (a SuperNode may read it mid-round)."""
    lines = [line for _, text in readable(sorted(folder.glob("*.txt"))) for line in text]
    atomic_write_bytes(out, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines).encode())


def readable(paths: Iterable[Path]) -> Iterator[tuple[Path, list[str]]]:
    """Each file's lines. A file that is not UTF-8 text is reported and skipped: it must not stop the rest."""
    for path in paths:
        try:
            yield path, list(read_text_lines(path))
        except ValueError as e:
            print(f"skipped: {e}", file=sys.stderr)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-dir", type=Path, required=True, help="folder of UTF-8 .txt files the user wrote")
    ap.add_argument("--outbox", type=Path, help="folder for sealed updates (needs --server-key)")
    ap.add_argument("--server-key", type=Path, help="the server's public key, from `edgekit keygen`")
    ap.add_argument("--clip-norm", type=float, default=DEFAULT_CLIP_NORM, help="what the server's round requires")
    ap.add_argument("--noise-multiplier", type=float, default=0.0, help="local DP noise, as the round requires")
    ap.add_argument("--flower-text", type=Path, help="also write all the text to this file for a Flower SuperNode")
    add_model_arguments(ap)
    args = ap.parse_args(argv)
    if (args.outbox is None) != (args.server_key is None):
        ap.error("--outbox and --server-key go together")
    if not args.text_dir.is_dir():
        ap.error(f"--text-dir {args.text_dir}: no such folder")
    return args


if __name__ == "__main__":
    sys.exit(main())
