"""The one tokenizer shared by the converter (training, calibration) and the device.

Both sides must cut text identically, otherwise a model trained on one split
of words is asked about another on the device. The rules are deliberately few
and written down in the model file (``TokenizerConfig``) so that a model keeps
the rules it was trained with even if the defaults change later.

Rules (version 1):
- Unicode NFKC, curly apostrophes become ``'``; lower-cased.
- A word is a run of letters/digits with inner apostrophes (``don't``,
  ``o'clock``); other punctuation separates words and is dropped.
- A word made only of digits (``2026``, ``3.14``, ``1,000``) becomes ``<num>``.
- ``.``, ``!``, ``?`` and line ends of one-message-per-line text end a
  sentence: they become ``</s>``.

Bounded work on any input: a line longer than ``MAX_LINE_CHARS`` is cut
(before a space where there is one) into pieces that count as lines of their
own; non-ASCII text is normalized in pieces of ``NFKC_CHUNK`` characters
(NFKC reorders a run of combining marks in quadratic time); a "word" longer
than ``MAX_WORD_CHARS`` is ``<unk>`` (no vocabulary has one); the partly typed
word is found by one backward scan.
"""
from __future__ import annotations

import codecs
import lzma
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import TextFileError

PAD, UNK, BOS, EOS, NUM = "<pad>", "<unk>", "<s>", "</s>", "<num>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, NUM)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NUMBER = r"\d+(?:[.,:]\d+)*"
_NUMBER_RE = re.compile(_NUMBER)
_RULE_CHARS_RE = re.compile(r"[.!?\d]")  # text without these has only words for tokens
_DIGITS = b"0123456789"
# ASCII text with no digit is cut without the token pattern, several times faster (the keyboard's common
# case): bytes -> themselves for word characters, "'" and sentence ends, a space for the rest; then an
# apostrophe not between two word characters is a separator, and a run of sentence ends with only
# separators between them is one ``</s>``; ``split`` then gives the tokens.
_ASCII_TOKEN_CHARS = bytes(c if chr(c).isalnum() or chr(c) in "'.!?" else 32 for c in range(128)) + b" " * 128
# Written to start with the apostrophe: the regex engine then jumps from one to the next.
_LONE_APOSTROPHE_RE = re.compile(r"'(?:(?<![A-Za-z0-9]')|(?![A-Za-z0-9]))")
_SENTENCE_ENDS_RE = re.compile(r"[.!?][.!? ]*")


def _word(letter: str) -> str:
    """A word: ``letter`` characters, optionally joined by inner apostrophes (``don't``, ``o'clock``)."""
    return rf"{letter}+(?:'{letter}+)*"


def _token_pattern(letter: str) -> re.Pattern:
    """A number (3.14, 1,000) not followed by a letter, else a word, else a run of sentence ends.

    ``letter`` is the class of word characters: Unicode letters and digits
    (``_LETTER``), or their ASCII subset, which cuts ASCII text the same way
    about twice as fast: the keyboard's common case. No groups: a token's
    first character says what it is.
    """
    return re.compile(rf"{_NUMBER}(?!{letter})|{_word(letter)}|[.!?]+")


_LETTER = r"[^\W_]"  # Unicode letters and digits; underscore is not a letter
_TOKEN_RE = _token_pattern(_LETTER)
_ASCII_TOKEN_RE = _token_pattern("[A-Za-z0-9]")
# split_partial(keep=N) reads only the end of text longer than this many
# characters per wanted token (about three words' worth each).
_LONG_TEXT_CHARS_PER_TOKEN = 16
_REVERSED_PARTIAL_RE = re.compile(rf"'?{_word(_LETTER)}")  # a word reads the same pattern backwards
MAX_LINE_CHARS = 8192  # longer lines are cut into pieces (the corpora's longest line has 6,504)
NFKC_CHUNK = 1024
MAX_WORD_CHARS = 64
_LONG_ENDS_RE = re.compile(rf"[.!?]{{{MAX_WORD_CHARS + 1}}}")  # a sentence-end token too long to be one


@dataclass(frozen=True)
class TokenizerConfig:
    """The rules a model was trained with; stored inside every model file."""

    version: int = 1
    lowercase: bool = True
    numbers_as_token: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        if data.get("version") != 1:
            raise ValueError(f"unsupported tokenizer version {data.get('version')!r} (this edgekit knows 1)")
        return cls(**{k: data[k] for k in ("version", "lowercase", "numbers_as_token") if k in data})


class Tokenizer:
    """Turns text into word tokens and sentence ends; no vocabulary lookup here."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()

    def normalize(self, text: str) -> str:
        if text.isascii():  # already NFKC, and "`" is its only apostrophe: the keyboard's common path
            text = text.replace("`", "'")
        elif len(text) <= NFKC_CHUNK:
            text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
        else:  # cut before spaces, where NFKC never joins: the same result in linear time
            text = "".join(unicodedata.normalize("NFKC", p) for p in pieces(text, NFKC_CHUNK)).translate(_APOSTROPHES)
        return text.lower() if self.config.lowercase else text

    def tokenize(self, text: str) -> list[str]:
        """Tokens of one piece of text (no implicit sentence start/end)."""
        norm = self.normalize(text)
        if len(norm) <= MAX_LINE_CHARS:
            return self._tokens(norm)
        out: list[str] = []
        for piece in pieces(norm, MAX_LINE_CHARS):  # the patterns backtrack within a piece, never across
            tokens = self._tokens(piece)
            out += tokens[1:] if out and tokens[:1] == [EOS] == out[-1:] else tokens
        return out

    def _tokens(self, norm: str) -> list[str]:
        """Tokens of normalized text."""
        # findall (one C call) rather than finditer + group(): the keyboard
        # tokenizes the end of the message after every space.
        data = norm.encode() if norm.isascii() else None
        words = None
        if data is not None and len(data.translate(None, _DIGITS)) == len(data):  # no number: no pattern
            words = _ascii_words(data)
        if words is not None:
            raw, rules = words, False  # its sentence ends are ``</s>`` already
        elif data is None:
            raw, rules = _TOKEN_RE.findall(norm), _RULE_CHARS_RE.search(norm) is not None
        else:
            raw, rules = _ASCII_TOKEN_RE.findall(norm), True
        if len(norm) > MAX_WORD_CHARS and max(map(len, raw), default=0) > MAX_WORD_CHARS:
            raw = [UNK if len(t) > MAX_WORD_CHARS else t for t in raw]
        if not rules:  # no sentence ends or numbers left to rewrite
            return raw
        out: list[str] = []
        numbers = self.config.numbers_as_token
        for t in raw:
            first = t[0]
            if first in ".!?":
                if not out or out[-1] != EOS:
                    out.append(EOS)
            elif numbers and first.isdigit() and _NUMBER_RE.fullmatch(t):  # not a word like "3pm"
                out.append(NUM)
            else:
                out.append(t)
        return out

    def iter_lines(self, lines: Iterable[str]) -> Iterator[list[str]]:
        """One token list per line, each a sentence stream ``<s> ... </s>``.

        Streaming keeps memory bounded for huge text files: callers never
        need the whole text in memory. A line longer than ``MAX_LINE_CHARS``
        comes out as several, one per piece.
        """
        for line in lines:
            for piece in pieces(line, MAX_LINE_CHARS) if len(line) > MAX_LINE_CHARS else (line,):
                tokens = self.tokenize(piece)
                if not tokens:
                    continue
                if tokens[-1] != EOS:
                    tokens.append(EOS)
                yield [BOS] + tokens

    def split_partial(self, text: str, keep: int | None = None) -> tuple[list[str], str]:
        """Context tokens and the partial word being typed.

        ``"see you tomo"`` -> ``(["<s>", "see", "you"], "tomo")``; text ending
        in a space or punctuation has an empty partial word. With ``keep``, a
        long text is read from near its end and only its last ``keep`` context
        tokens come back (without ``<s>``): a keyboard asks after every space,
        and a long message would otherwise be read whole each time.
        """
        if keep is not None and keep < 1:
            raise ValueError(f"split_partial(keep={keep}): keep at least one context token")
        if keep is not None and len(text) > _LONG_TEXT_CHARS_PER_TOKEN * keep:
            tail = self._split_tail(text, keep)
            if tail is not None:
                return tail
        # The text before the last sentence end does not predict the next word
        # well, but it is still context: the model decides. Start-of-text is
        # marked so an empty context is meaningful.
        context, prefix = self._split(text)
        return [BOS] + context, prefix

    def _split(self, text: str) -> tuple[list[str], str]:
        norm = self.normalize(text)
        start = _partial_start(norm)
        return (self._tokens(norm[:start]), norm[start:]) if start is not None else (self._tokens(norm), "")

    def _split_tail(self, text: str, keep: int) -> tuple[list[str], str] | None:
        """``split_partial`` of a long text from an end of it, or None when the text has too few words.

        The cut is just before a whitespace character: normalization never
        joins across one (it composes with nothing) and no token contains one,
        so the end tokenizes as it does in the whole text, except that a
        sentence end there may repeat the one before it: more than ``keep``
        tokens leave that first one out. The end read grows fourfold until it
        has them (emoji and dashes are words without tokens).
        """
        words = 2 * keep
        while True:
            parts = text.rsplit(maxsplit=words)
            if len(parts) <= words:
                return None
            context, prefix = self._split(text[len(parts[0]):])
            if len(context) > keep:
                return context[-keep:], prefix
            words *= 4


def _ascii_words(data: bytes) -> list[str] | None:
    """The tokens of ASCII text (its bytes) with no digit, as the token pattern and the rewrite of its
    sentence ends cut it (a run of them one ``</s>``); ``None`` for a run of more than ``MAX_WORD_CHARS``
    sentence-end characters, which the pattern reads as one over-long token (``<unk>``)."""
    text = data.translate(_ASCII_TOKEN_CHARS).decode()
    if "'" in text:
        text = _LONE_APOSTROPHE_RE.sub(" ", text)
    ends = text.count(".") + text.count("!") + text.count("?")
    if ends > MAX_WORD_CHARS and _LONG_ENDS_RE.search(text):
        return None
    if ends:
        text = _SENTENCE_ENDS_RE.sub(f" {EOS} ", text)
    return text.split()


def _partial_start(text: str) -> int | None:
    """Where the partly typed word at the end of ``text`` starts, or None when it ends in none.

    The word is the longest end of ``text`` that is letters and digits joined
    by single apostrophes, with at most one apostrophe after (``don'``). A
    search for ``word'?$`` backtracks from every position of a long run of
    letters that does not reach the end (quadratic: 0.9 s for 4,000 letters
    and two apostrophes); the word read backwards from the end is one
    anchored match, linear.
    """
    m = _REVERSED_PARTIAL_RE.match(text[::-1])
    return None if m is None else len(text) - m.end()


def pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of at most ``size`` characters, each cut just before a space or tab where there is one.

    A cut before a space changes neither normalization nor tokens; a piece
    with no space in it (a run of letters or marks) is cut hard.
    """
    start = 0
    while len(text) - start > size:
        cut = max(text.rfind(" ", start + 1, start + size), text.rfind("\t", start + 1, start + size))
        cut = cut if cut > start else start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


def text_lines(text: str | Path | Iterable[str]) -> Iterator[str]:
    """The lines of ``text``: a ``Path`` is read as a UTF-8 file (streamed), a ``str`` is
    the text itself, anything else an iterable of lines (messages).

    A short one-line ``str`` that names an existing file is refused: it is
    almost always a file name meant as a file, and learning from the name
    would silently learn nothing.
    """
    if isinstance(text, Path):
        return read_text_lines(text)
    if isinstance(text, str):
        if len(text) < 4096 and "\n" not in text and text.strip() and os.path.isfile(text):
            raise TypeError(f"{text!r} is the name of a file, given as text: pass Path({text!r}) to read "
                            "the file (or a list of strings to use the name as text)")
        return iter(text.splitlines() or [text])
    given: object = text  # not in the signature, but a file read in binary mode is a likely mistake
    if isinstance(given, (bytes, bytearray)):
        raise TypeError("text given as bytes: decode it first (data.decode('utf-8')), or pass a Path to read a file")
    return _str_lines(text)


def _str_lines(lines: Iterable[str]) -> Iterator[str]:
    for i, line in enumerate(lines, 1):
        if not isinstance(line, str):
            raise TypeError(f"line {i} of the text is {type(line).__name__}, not str"
                            + (": decode it first (line.decode('utf-8'))" if isinstance(line, bytes) else ""))
        yield line


def require_text_file(path: str | Path) -> Path:
    """``path`` when it is a file; else ``TextFileError`` saying what is there instead (the one
    wording of a missing text file, for the CLI's checks before it loads a model too)."""
    p = Path(path)
    if not p.is_file():
        raise TextFileError(f"{p}: a folder, not a text file" if p.is_dir() else f"{p}: no such text file")
    return p


def not_utf8(name: str | Path, byte: int, line: int) -> TextFileError:
    """The one wording of text that is not UTF-8, from a file or standard input."""
    return TextFileError(f"{name}: not UTF-8 text (bad byte {byte:#04x} on line {line})")


def read_text_lines(path: str | Path, max_line_chars: int = 100_000) -> Iterator[str]:
    """Lines of a UTF-8 text file, or of an ``.xz``-compressed one, streamed, with clear errors for bad input.

    Raises ``TextFileError`` (a ``ValueError``) naming the file when it is missing
    or not a file, binary or non-UTF-8, or a broken ``.xz``. A line longer than ``max_line_chars`` arrives in pieces, so
    a huge file with no line breaks still takes bounded memory.
    """
    require_text_file(path)
    try:
        with _open(path) as f:
            lineno = 1
            while True:
                try:
                    line = f.readline(max_line_chars)
                except UnicodeDecodeError:  # decoded ahead in blocks: find the line the bad byte is on
                    bad_line, byte = _first_bad_byte(path)
                    raise not_utf8(path, byte, bad_line) from None
                if not line:
                    return
                if "\x00" in line:
                    raise TextFileError(f"{path}: looks like a binary file (NUL byte near line {lineno}), "
                                     "expected UTF-8 text")
                lineno += line.endswith("\n")
                yield line
    except (lzma.LZMAError, EOFError) as e:
        raise TextFileError(f"{path}: not a complete .xz file ({e})") from None


def _open(path: str | Path, binary: bool = False) -> IO:
    """A plain file, or an ``.xz`` one decompressed while it is read; strict UTF-8 unless ``binary``."""
    xz = str(path).endswith(".xz")
    if binary:
        return lzma.open(path, "rb") if xz else open(path, "rb")
    if xz:
        return lzma.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def _first_bad_byte(path: str | Path) -> tuple[int, int]:
    """The line number and value of the first byte that is not UTF-8 (streamed, bounded memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lineno = 1
    with _open(path, binary=True) as f:
        while chunk := f.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                pending = len(e.object) - len(chunk)  # undecoded bytes carried over from the previous chunk
                return lineno + chunk[: max(0, e.start - pending)].count(b"\n"), e.object[e.start]
            lineno += chunk.count(b"\n")
    return lineno, 0
