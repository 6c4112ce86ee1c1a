"""Corpus cleaning, the fixed splits, and context/target windows (no TensorFlow)."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from edgekit.converters import corpus
from edgekit.tokenizer import Tokenizer
from edgekit.vocab import Vocabulary

HEADERS = b"From: a@b.c\nTo: list@x.org\nSubject: Re: hello there friends\nContent-Type: text/plain\n\n"


def _mail(body: str, headers: bytes = HEADERS) -> list[str]:
    return corpus.email_paragraphs(headers + body.encode())


def test_email_drops_headers_and_joins_wrapped_lines():
    assert _mail("I tried the new build\nand it works fine for me.\n") == ["I tried the new build and it works fine for me."]


def test_email_drops_quotes_attribution_and_pipe_quotes():
    body = "On Mon, Bob wrote:\n> old text here\n  | more old text\n\nMy own answer is yes indeed.\n"
    assert _mail(body) == ["My own answer is yes indeed."]


def test_email_stops_at_signature_footer_and_original_message():
    for stop in ("-- \nBob Smith, Example Corp", "_______________________________________________\nList mailing list",
                 "-----Original Message-----\nFrom: x", "------------------------ Yahoo! Groups Sponsor ---"):
        assert _mail(f"See you at the meeting tomorrow.\n{stop} with many words after\n") == ["See you at the meeting tomorrow."]


def test_email_removes_urls_and_addresses_and_junk_lines():
    body = ("Read it at http://example.com/x?y=1 or mail bob@example.com please.\n\n"
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTIzNDU2Nzg5MA==\n\n"
            "18:19:03 {exec pick +inbox -list 4852-4852}\n")
    assert _mail(body) == ["Read it at or mail please."]


def test_email_uses_plain_text_parts_only():
    raw = (b"From: a@b.c\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n"
           b"--XX\nContent-Type: text/plain\n\nPlain words are the ones we keep.\n"
           b"--XX\nContent-Type: text/html\n\n<p>Html words are dropped here</p>\n--XX--\n")
    assert corpus.email_paragraphs(raw) == ["Plain words are the ones we keep."]
    html_only = b"From: a@b.c\nContent-Type: text/html\n\n<p>only html in this message</p>\n"
    assert corpus.email_paragraphs(html_only) == []


def test_email_decodes_base64_text_part():
    raw = HEADERS.replace(b"Content-Type: text/plain\n", b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n")
    assert corpus.email_paragraphs(raw + b"VGhpcyBpcyBhIGRlY29kZWQgbWVzc2FnZS4=\n") == ["This is a decoded message."]


def test_email_drops_short_paragraphs():
    assert _mail("Thanks\n\nkre\n") == []


def test_book_paragraphs_join_lines_and_drop_headings():
    text = "EMMA\n\nCHAPTER I\n\n\nEmma Woodhouse, handsome, clever,\nand rich.\n\nFinis\n"
    assert corpus.book_paragraphs(text) == ["Emma Woodhouse, handsome, clever, and rich."]


def test_wikitext_detokenizes_and_drops_unk_sentences():
    text = " = Title = \n \n A well @-@ known lobster , 0 @.@ 7 kg ( big ) . It is <unk> here . It lives at sea . \n"
    assert corpus.wikitext_paragraphs(text) == ["A well-known lobster, 0.7 kg (big). It lives at sea."]


@given(st.lists(st.integers(), max_size=60), st.floats(0.0, 1.0))
def test_personal_split_is_a_deterministic_prefix_split(lines, fraction):
    train, test = corpus.personal_split(lines, fraction)
    assert train + test == lines and len(train) == int(len(lines) * fraction)
    assert corpus.personal_split(lines, fraction) == (train, test)


def test_shipped_files_exist_and_heldout_is_not_trained_on():
    train, heldout = corpus.train_files(), corpus.heldout_files()
    assert all(p.is_file() for p in [*train, *heldout.values(), corpus.personal_file()])
    assert not {p.name for p in train} & {p.name for p in heldout.values()}
    assert not any("persuasion" in p.name or "sms" in p.name for p in train)


def test_windows_match_window_arrays_and_skip_start_targets():
    lines = list(Tokenizer().iter_lines(["see you at the cafe.", "the cafe at noon? see you"]))
    vocab = Vocabulary.build(lines, size=4, personal_slots=2)
    x, y = corpus.window_arrays(lines, vocab, 3)
    pairs = list(corpus.windows(lines, vocab, 3))
    assert np.array_equal(x, np.stack([c for c, _ in pairs])) and y.tolist() == [t for _, t in pairs]
    assert x.dtype == np.int32 and x.shape == (len(y), 3)
    assert vocab.bos not in y and vocab.pad not in y
    assert x[0].tolist() == [vocab.pad, vocab.pad, vocab.bos]  # first word: context is just <s>
    assert (y == vocab.unk).any()  # OOV targets stay (they are the model's <unk> mass)
