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
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

PAD, UNK, BOS, EOS, NUM = "<pad>", "<unk>", "<s>", "</s>", "<num>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS, NUM)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
# A word: letters or digits, optionally joined by apostrophes or by the
# separators inside numbers (3.14, 1,000). Underscore is not a letter.
_WORD = r"[^\W_]+(?:'[^\W_]+)*"
_NUMBER = r"\d+(?:[.,:]\d+)*"
_PARTIAL_RE = re.compile(rf"{_WORD}'?$")
_TOKEN_RE = re.compile(rf"(?P<num>{_NUMBER})(?![^\W_])|(?P<word>{_WORD})|(?P<end>[.!?]+)")


@dataclass(frozen=True)
class TokenizerConfig:
    """The rules a model was trained with; stored inside every model file."""

    version: int = 1
    lowercase: bool = True
    numbers_as_token: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TokenizerConfig":
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
        else:
            text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
        return text.lower() if self.config.lowercase else text

    def tokenize(self, text: str) -> list[str]:
        """Tokens of one piece of text (no implicit sentence start/end)."""
        return self._tokens(self.normalize(text))

    def _tokens(self, norm: str) -> list[str]:
        """Tokens of normalized text."""
        out: list[str] = []
        # findall (one C call) rather than finditer + group(): the keyboard
        # tokenizes the whole message after every space.
        for num, word, _ in _TOKEN_RE.findall(norm):
            if num:
                out.append(NUM if self.config.numbers_as_token else num)
            elif word:
                out.append(word)
            elif not out or out[-1] != EOS:
                out.append(EOS)
        return out

    def iter_lines(self, lines: Iterable[str]) -> Iterator[list[str]]:
        """One token list per line, each a sentence stream ``<s> ... </s>``.

        Streaming keeps memory bounded for huge text files: callers never
        need the whole text in memory.
        """
        for line in lines:
            tokens = self.tokenize(line)
            if not tokens:
                continue
            if tokens[-1] != EOS:
                tokens.append(EOS)
            yield [BOS] + tokens

    def split_partial(self, text: str) -> tuple[list[str], str]:
        """Context tokens and the partial word being typed.

        ``"see you tomo"`` -> ``(["<s>", "see", "you"], "tomo")``; text ending
        in a space or punctuation has an empty partial word.
        """
        norm = self.normalize(text)
        prefix = ""
        m = _PARTIAL_RE.search(norm, _last_run_start(norm))
        if m:
            prefix = m.group(0)
            norm = norm[: m.start()]
        context = self._tokens(norm)
        # The text before the last sentence end does not predict the next word
        # well, but it is still context: the model decides. Start-of-text is
        # marked so an empty context is meaningful.
        return [BOS] + context, prefix


def _last_run_start(text: str) -> int:
    """Where the trailing run of word characters and apostrophes starts.

    A partial word lies inside it, so searching from here finds the same
    match as searching the whole text, without scanning every word.
    (The patterns' word characters are exactly those of ``str.isalnum()``.)
    """
    start = len(text)
    while start and (text[start - 1].isalnum() or text[start - 1] == "'"):
        start -= 1
    return start


def read_text_lines(path, max_line_chars: int = 100_000) -> Iterator[str]:
    """Lines of a UTF-8 text file, streamed, with clear errors for bad input.

    Raises ``ValueError`` naming the file for binary or non-UTF-8 content.
    A line longer than ``max_line_chars`` arrives in pieces, so a huge file
    with no line breaks still takes bounded memory.
    """
    with open(path, encoding="utf-8", errors="strict") as f:
        lineno = 1
        while True:
            try:
                line = f.readline(max_line_chars)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}: not UTF-8 text (bad byte {e.object[e.start]:#04x} near line {lineno})") from None
            if not line:
                return
            if "\x00" in line:
                raise ValueError(f"{path}: looks like a binary file (NUL byte near line {lineno}), expected UTF-8 text")
            lineno += line.endswith("\n")
            yield line
