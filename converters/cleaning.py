"""Cleaning raw corpora into the lines a keyboard's user would type.

The raw corpora (mailing-list email, novels, Wikipedia, chat logs) are full of
things a keyboard never sees: mail headers, quoted replies, signatures, list
footers, URLs, chapter headings, hard-wrapped lines, bot commands. Each
function here takes one source's raw text and keeps the prose, one paragraph
(or message part) per line. ``rebuild_data`` applies them; their output is
what ``data/`` ships.
"""
from __future__ import annotations

import email
import email.policy
import re
from typing import Iterable, Iterator

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


def plain(lines: list[str]) -> list[str]:
    """Whitespace collapsed, empty lines dropped; the text is otherwise as people typed it."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def irc_lines(lines: list[str]) -> list[str]:
    """IRC without URLs/addresses, bot and client commands (``!ask``, ``/join``), control
    characters, and lines that are mostly paths, code or logs."""
    cleaned = plain(["".join(c for c in _URL_OR_ADDRESS.sub(" ", line) if c.isprintable()) for line in lines])
    return [line for line in cleaned if line[0] not in "!/" and _looks_like_prose(line)]


def without_name_placeholder(lines: list[str]) -> list[str]:
    """GoEmotions replaced names by ``[NAME]``: drop those sentences (as WikiText's ``<unk>`` ones),
    so the model never learns to suggest "name" where a person's name was."""
    return plain([" ".join(s for s in _SENTENCE.split(line) if "[NAME]" not in s) for line in lines])


def user_turns(lines: list[str]) -> list[str]:
    """Schema-Guided Dialogue: the user's turns (every other, from the first); the system's are templates."""
    return plain(lines[0::2])
