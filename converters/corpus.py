"""Training and evaluation text for the default English model.

The raw corpora (mailing-list email, novels, plays) are full of things a
keyboard never sees: mail headers, quoted replies, signatures, list footers,
URLs, chapter headings, hard-wrapped lines. Cleaning them once, here, and
shipping the result in ``data/`` makes the bundled model rebuildable without
the raw corpora: ``python -m edgekit.converters.corpus --shared /path/to/shared/data``
regenerates ``data/`` byte for byte.

Every output file holds one paragraph (or message part) per line, which is
what ``Tokenizer.iter_lines`` turns into one ``<s> ... </s>`` stream.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np

from edgekit.tokenizer import Tokenizer, read_text_lines
from edgekit.vocab import Vocabulary

from . import CheckoutFolderMissing, checkout_folder, require_checkout

DATA_DIR: Path | None = checkout_folder("data")  # None outside a source checkout

TRAIN_FILES: tuple[str, ...] = (
    "train/email_easy_ham_1.txt",
    "train/wikitext2_valid.txt",
    "train/wikitext2_test.txt",
)
# Modern prose only: a keyboard's users write email and messages. Version 1 also
# read Shakespeare and five Austen novels; its suggestions leaned archaic
# ("thank you for your" -> "grace"), and an Austen user had nothing left to teach it.
# name -> file; never used for training or for choosing the vocabulary.
HELDOUT_FILES: dict[str, str] = {
    "email": "heldout/email_easy_ham_2.txt",
    "persuasion": "heldout/austen_persuasion.txt",
}
PERSONAL_FILE = "personal/sms_ham.txt"
PERSONAL_TRAIN_FRACTION = 0.8

T = TypeVar("T")


def data_root(data_dir: Path | str | None = None) -> Path:
    """``data_dir``, else the checkout's ``data/`` (:class:`CheckoutFolderMissing` without one)."""
    return Path(data_dir) if data_dir else require_checkout(DATA_DIR, "data_dir")


def train_files(data_dir: Path | str | None = None) -> list[Path]:
    """The base model's training text, in a fixed order (vocabulary ties depend on it)."""
    root = data_root(data_dir)
    return [root / name for name in TRAIN_FILES]


def heldout_files(data_dir: Path | str | None = None) -> dict[str, Path]:
    """Evaluation text: later email (a time split) and a book not used in training."""
    root = data_root(data_dir)
    return {key: root / name for key, name in HELDOUT_FILES.items()}


def personal_file(data_dir: Path | str | None = None) -> Path:
    """SMS messages standing in for one user's own typing (never in base training)."""
    return data_root(data_dir) / PERSONAL_FILE


def personal_split(lines: Sequence[T], train_fraction: float = PERSONAL_TRAIN_FRACTION) -> tuple[list[T], list[T]]:
    """First ``train_fraction`` of the lines to learn from, the rest to test on.

    A prefix split (not random) mimics time: the device learns from what the
    user typed before and is tested on what they type next. Deterministic, so
    every experiment uses the same messages.
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    cut = int(len(lines) * train_fraction)
    return list(lines[:cut]), list(lines[cut:])


# -- email ---------------------------------------------------------------
_QUOTED = re.compile(r"^\s*(>|\|)")
_ATTRIBUTION = re.compile(r"(wrote|writes|said)\s*:\s*$", re.IGNORECASE)
_FORWARDED_HEADER = re.compile(r"^\s*(from|to|cc|date|subject|sent|message-id|reply-to|hash)\s*:", re.IGNORECASE)
# Lines after which nothing is the author's own prose: signature, list footer,
# forwarded/quoted original, PGP signature.
_STOP = re.compile(
    r"^(-- ?$|_{10,}|-{10,}|-+ ?Original Message|-+ ?Forwarded message|-+BEGIN PGP SIGNATURE"
    r"|-{3,} ?In \S+ wrote|To unsubscribe|Do You Yahoo!?)",
    re.IGNORECASE,
)
_URL_OR_ADDRESS = re.compile(r"(\S+://\S+|www\.\S+|\S+@\S+|<\S+>)")
_MIN_EMAIL_WORDS = 3


def email_paragraphs(raw: bytes) -> list[str]:
    """The author's own paragraphs of one RFC 822 message, one per string."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [p for body in _plain_bodies(message) for p in _body_paragraphs(body)]


def _plain_bodies(message: email.message.Message) -> Iterator[str]:
    """Decoded text/plain parts; HTML and attachments carry no typing to learn from."""
    for part in message.walk():
        if part.get_content_type() != "text/plain" or part.get_filename():
            continue
        payload = part.get_payload(decode=True) or b""
        yield payload.decode(part.get_content_charset() or "latin-1", errors="replace")


def _body_paragraphs(body: str) -> Iterator[str]:
    lines: list[str] = []
    for line in body.splitlines():
        if _STOP.match(line):
            break
        lines.append(_clean_email_line(line))
    for paragraph in _paragraphs(lines):
        if len(paragraph.split()) >= _MIN_EMAIL_WORDS:
            yield paragraph


def _clean_email_line(line: str) -> str:
    """The line's prose, or "" for quotes, headers, code, logs and encoded junk."""
    if _QUOTED.match(line) or _ATTRIBUTION.search(line) or _FORWARDED_HEADER.match(line):
        return ""
    line = " ".join(_URL_OR_ADDRESS.sub(" ", line).split())
    return line if _looks_like_prose(line) else ""


def _looks_like_prose(line: str) -> bool:
    """Mostly letters and spaces, no giant tokens (base64, paths, hashes)."""
    chars = line.replace(" ", "")
    if not chars or max(len(w) for w in line.split()) > 25:
        return False
    letters = sum(c.isalpha() for c in chars)
    return letters / len(chars) >= 0.75 and "\ufffd" not in line


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Join hard-wrapped lines; a blank line ends a paragraph."""
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            yield " ".join(current)
            current = []
    if current:
        yield " ".join(current)


# -- books, plays, wikipedia -----------------------------------------------
_MIN_BOOK_WORDS = 4


def book_paragraphs(text: str) -> list[str]:
    """Paragraphs of a hard-wrapped novel; short ones (titles, chapter headings) dropped."""
    return [p for p in _paragraphs(text.splitlines()) if len(p.split()) >= _MIN_BOOK_WORDS]


_WIKI_GLUE = re.compile(r" @(.)@ ")
_WIKI_SPACE_BEFORE = re.compile(r" ([.,;:!?)'\"]|'s\b|n't\b)")
_WIKI_SPACE_AFTER = re.compile(r"([(]) ")
_SENTENCE = re.compile(r"(?<=[.!?]) +")


def wikitext_paragraphs(text: str) -> list[str]:
    """WikiText-2 de-tokenized; headings and sentences with ``<unk>`` dropped.

    Dropping only the sentence (not the paragraph) keeps most text while never
    teaching the model a bigram that spans a removed word.
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        line = _WIKI_SPACE_AFTER.sub(r"\1", _WIKI_SPACE_BEFORE.sub(r"\1", _WIKI_GLUE.sub(r"\1", line)))
        kept = [s for s in _SENTENCE.split(line) if "<unk>" not in s]
        if kept:
            out.append(" ".join(kept))
    return out


# -- token lines -> (context, target) windows -----------------------------------
def token_lines(paths: Iterable[Path | str], tokenizer: Tokenizer | None = None) -> Iterator[list[str]]:
    """``<s> ... </s>`` token lists of every line of the files, streamed."""
    tokenizer = tokenizer or Tokenizer()
    for path in paths:
        yield from tokenizer.iter_lines(read_text_lines(path))


def windows(lines: Iterable[list[str]], vocab: Vocabulary, context_length: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(context ids [context_length] int32, target id)`` for every predictable position.

    The context is the previous ``context_length`` ids of the same line,
    left-padded with ``<pad>``, exactly what the device builds while typing.
    ``<pad>``/``<s>`` targets are skipped: nothing ever has to predict them.
    """
    for tokens in lines:
        ids = np.asarray(vocab.encode(tokens), dtype=np.int32)
        padded = np.concatenate([np.full(context_length, vocab.pad, np.int32), ids])
        for i in range(1, len(ids)):
            if ids[i] not in (vocab.pad, vocab.bos):
                yield padded[i : i + context_length], int(ids[i])


def window_arrays(lines: Iterable[list[str]], vocab: Vocabulary, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows stacked: contexts ``[N, context_length]`` int32, targets ``[N]`` int32.

    Vectorized per line (a sliding view), since training makes millions of windows.
    """
    contexts, targets = [], []
    for tokens in lines:
        ids = np.asarray(vocab.encode(tokens), dtype=np.int32)
        padded = np.concatenate([np.full(context_length, vocab.pad, np.int32), ids[:-1]])
        keep = (ids[1:] != vocab.pad) & (ids[1:] != vocab.bos)
        view = np.lib.stride_tricks.sliding_window_view(padded, context_length)[1:]
        contexts.append(view[keep])
        targets.append(ids[1:][keep])
    if not contexts:
        return np.zeros((0, context_length), np.int32), np.zeros(0, np.int32)
    return np.concatenate(contexts).astype(np.int32), np.concatenate(targets).astype(np.int32)


# -- rebuild data/ from the raw corpora -----------------------------------------
def _email_dir_paragraphs(directory: Path) -> list[str]:
    return [p for f in sorted(directory.glob("*.txt")) for p in email_paragraphs(f.read_bytes())]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def build_sources(shared: Path) -> dict[str, list[str]]:
    """Output file name (relative to ``data/``) -> its cleaned lines."""
    c = shared / "corpora"
    out = {"train/email_easy_ham_1.txt": _email_dir_paragraphs(c / "spamassassin" / "easy-ham-1")}
    for split in ("valid", "test"):
        out[f"train/wikitext2_{split}.txt"] = wikitext_paragraphs(_read(c / "wikitext2" / f"{split}.txt"))
    out["heldout/email_easy_ham_2.txt"] = _email_dir_paragraphs(c / "spamassassin" / "easy-ham-2")
    out["heldout/austen_persuasion.txt"] = book_paragraphs(_read(c / "austen" / "persuasion.txt"))
    out[PERSONAL_FILE] = [line.strip() for line in _read(c / "sms_ham.txt").splitlines() if line.strip()]
    return out


def rebuild(shared: Path | str, out_dir: Path | str | None = None) -> dict[str, int]:
    """Write every cleaned file under ``out_dir`` (default: the checkout's ``data/``); returns lines per file."""
    out = Path(out_dir) if out_dir else require_checkout(DATA_DIR, "out_dir", exists=False)
    counts = {}
    for name, lines in build_sources(Path(shared)).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts[name] = len(lines)
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild data/ from the raw corpora.")
    parser.add_argument("--shared", required=True, help="directory holding corpora/ (see data/README.md)")
    parser.add_argument("--out", help="output directory (default: the source checkout's data/)")
    args = parser.parse_args(argv)
    try:
        counts = rebuild(args.shared, args.out or require_checkout(DATA_DIR, "--out", exists=False))
    except CheckoutFolderMissing as e:
        parser.error(str(e))
    for name, n in counts.items():
        print(f"{n:8d} lines  {name}")


if __name__ == "__main__":
    main()
