"""Rebuild ``data/`` from the raw corpora: ``python -m edgekit.converters.rebuild_data --shared DIR``.

Cleans every source (``cleaning``), splits the version 2 sources into
train / valid / test by ``corpus.split_of`` and writes them ``.xz``-compressed
with their licenses. The output is byte for byte what the repository ships,
so the bundled model is rebuildable from the raw corpora, and ``data/`` can be
checked against them.
"""
from __future__ import annotations

import argparse
import lzma
import re
import shutil
from pathlib import Path
from typing import Iterator, Sequence

from . import require_checkout
from .cleaning import book_paragraphs, email_paragraphs, wikitext_paragraphs
from .corpus import DATA_DIR, PERSONAL_FILE, SOURCES, SPLITS, Source, split_of


def source_units(source: Source, corpora: Path) -> Iterator[list[str]]:
    """The cleaned lines of each unit (line, conversation or message) of a source."""
    path = corpora / source.raw
    if source.unit == "email":
        for f in sorted(path.glob("*.txt")):
            yield source.clean(email_paragraphs(f.read_bytes()))
        return
    text = _read(path)
    if source.unit == "line":
        for line in text.splitlines():
            yield source.clean([line])
        return
    for block in re.split(r"\n\s*\n", text):
        yield source.clean(block.splitlines())


def split_source(source: Source, corpora: Path) -> dict[str, list[str]]:
    """Split name -> output lines; conversations stay whole and end with a blank line.

    The split is decided on the cleaned unit, so two raw lines that clean to
    the same text (differing only in a removed URL) share one split.
    """
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for lines in source_units(source, corpora):
        if lines:
            out[split_of("\n".join(lines), source.has_test)].extend(lines + [""] * (source.unit == "conversation"))
    return out


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
    """Write every cleaned file under ``out_dir``; returns lines per file.

    The version 2 sources go out as ``.xz`` (preset 9; the text inside is
    what ``training.json`` hashes) with their license files.
    """
    shared = Path(shared)
    out_dir = Path(out_dir) if out_dir else require_checkout(DATA_DIR, "out_dir", exists=False)
    counts = {}
    for name, lines in build_sources(shared).items():
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        counts[name] = len(lines)
    for source in SOURCES.values():
        for split, lines in split_source(source, shared / "corpora").items():
            if split == "heldout" and not source.has_test:
                continue
            target = out_dir / source.file(split)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lzma.compress("".join(line + "\n" for line in lines).encode("utf-8"), preset=9))
            counts[source.file(split)] = len(lines)
        _copy_license(source, shared / "corpora" / "licenses", out_dir)
    return counts


def _copy_license(source: Source, licenses: Path, out_dir: Path) -> None:
    """``data/licenses/<file>``; a share-alike license also beside each split file of its source."""
    if source.license_file is None:
        return
    targets = [out_dir / "licenses" / source.license_file]
    if source.share_alike:
        targets += [out_dir / split / f"{source.name}.LICENSE{Path(source.license_file).suffix}" for split in SPLITS]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(licenses / source.license_file, target)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild data/ from the raw corpora.")
    parser.add_argument("--shared", required=True, help="directory holding corpora/ (see data/README.md)")
    parser.add_argument("--out", default=None, help="output directory (default: the source checkout's data/)")
    args = parser.parse_args(argv)
    for name, n in rebuild(args.shared, args.out).items():
        print(f"{n:8d} lines  {name}")


if __name__ == "__main__":
    main()
