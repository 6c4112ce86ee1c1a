"""Corpus cleaning, the fixed splits, and context/target windows (no TensorFlow)."""
from __future__ import annotations

import lzma
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekit.converters import cleaning, corpus, rebuild_data
from edgekit.tokenizer import Tokenizer, read_text_lines
from edgekit.vocab import Vocabulary

HEADERS = b"From: a@b.c\nTo: list@x.org\nSubject: Re: hello there friends\nContent-Type: text/plain\n\n"


def _mail(body: str, headers: bytes = HEADERS) -> list[str]:
    return cleaning.email_paragraphs(headers + body.encode())


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
    assert cleaning.email_paragraphs(raw) == ["Plain words are the ones we keep."]
    html_only = b"From: a@b.c\nContent-Type: text/html\n\n<p>only html in this message</p>\n"
    assert cleaning.email_paragraphs(html_only) == []


def test_email_decodes_base64_text_part():
    raw = HEADERS.replace(b"Content-Type: text/plain\n", b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n")
    assert cleaning.email_paragraphs(raw + b"VGhpcyBpcyBhIGRlY29kZWQgbWVzc2FnZS4=\n") == ["This is a decoded message."]


def test_email_drops_short_paragraphs():
    assert _mail("Thanks\n\nkre\n") == []


def test_book_paragraphs_join_lines_and_drop_headings():
    text = "EMMA\n\nCHAPTER I\n\n\nEmma Woodhouse, handsome, clever,\nand rich.\n\nFinis\n"
    assert cleaning.book_paragraphs(text) == ["Emma Woodhouse, handsome, clever, and rich."]


def test_wikitext_detokenizes_and_drops_unk_sentences():
    text = " = Title = \n \n A well @-@ known lobster , 0 @.@ 7 kg ( big ) . It is <unk> here . It lives at sea . \n"
    assert cleaning.wikitext_paragraphs(text) == ["A well-known lobster, 0.7 kg (big). It lives at sea."]


@given(st.lists(st.integers(), max_size=60), st.floats(0.0, 1.0))
def test_personal_split_is_a_deterministic_prefix_split(lines, fraction):
    train, test = corpus.personal_split(lines, fraction)
    assert train + test == lines and len(train) == int(len(lines) * fraction)
    assert corpus.personal_split(lines, fraction) == (train, test)


def test_shipped_files_exist_and_heldout_is_not_trained_on():
    train, valid, heldout = corpus.train_files(), corpus.valid_files(), corpus.heldout_files()
    assert all(p.is_file() for p in [*train, *valid, *heldout.values(), corpus.personal_file()])
    names = [{p.name for p in files} for files in (train, valid, heldout.values())]
    assert all(p.parent.name == split for files, split in ((train, "train"), (valid, "valid")) for p in files)
    assert {p.parent.name for p in heldout.values()} == {"heldout"}
    assert not any("persuasion" in p.name or "sms" in p.name for p in [*train, *valid])
    assert names[0] == names[1] and len(heldout) == len(train) - 1 + 2  # the email's test is the time split


def test_share_alike_licenses_sit_beside_their_data():
    for source in corpus.SOURCES.values():
        if source.license_file:
            assert (corpus.DATA_DIR / "licenses" / source.license_file).is_file()
        for split in corpus.SPLITS if source.share_alike else ():
            assert next((corpus.DATA_DIR / split).glob(f"{source.name}.LICENSE*")).is_file()


def _lines(path):
    return [line.rstrip("\n") for line in read_text_lines(path)]


@pytest.mark.parametrize("name", ["irc_ubuntu_linux", "goemotions_reddit", "tatoeba"])
def test_shipped_line_splits_are_disjoint(name):
    """Line sources split by the hash of the line: a line (and all its duplicates) sits in one split."""
    sets = [set(_lines(corpus.DATA_DIR / corpus.SOURCES[name].file(split))) - {""} for split in corpus.SPLITS]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_shipped_conversation_splits_are_disjoint():
    """Conversation sources split whole conversations (blank-line separated) by their hash."""
    def conversations(split):
        text = "\n".join(_lines(corpus.DATA_DIR / corpus.SOURCES["topical_chat"].file(split)))
        return {c for c in text.split("\n\n") if c.strip()}

    train, valid, test = (conversations(split) for split in corpus.SPLITS)
    assert len(test) > 40 and not (train & valid or train & test or valid & test)


def test_split_of_is_fixed_and_roughly_3_2_95():
    units = [f"message number {i}" for i in range(20_000)]
    splits = [corpus.split_of(u) for u in units]
    assert splits == [corpus.split_of(u) for u in units]
    share = {s: splits.count(s) / len(units) for s in corpus.SPLITS}
    assert abs(share["heldout"] - 0.03) < 0.006 and abs(share["valid"] - 0.02) < 0.005
    assert "heldout" not in {corpus.split_of(u, has_test=False) for u in units}
    assert corpus.split_of("lol") == "train"  # pinned: a change of rule would silently reshuffle the splits


def test_split_source_ignores_order_and_keeps_conversations_whole(tmp_path):
    convs = [[f"hello {i}, how are you?", f"fine {i}, and you?", "me too."] for i in range(300)]
    source = corpus.Source("chat", "chat.txt", "conversation", cleaning.plain, "CC0")
    outs = []
    for order in (convs, random.Random(0).sample(convs, len(convs))):
        (tmp_path / "chat.txt").write_text("\n\n".join("\n".join(c) for c in order) + "\n")
        outs.append({split: {tuple(c.strip().split("\n")) for c in "\n".join(lines).split("\n\n") if c.strip()}
                     for split, lines in rebuild_data.split_source(source, tmp_path).items()})
    assert outs[0] == outs[1]
    assert sum(len(v) for v in outs[0].values()) == 300 and all(outs[0].values())


def test_user_turns_and_name_placeholder_cleaning():
    assert cleaning.user_turns(["book a table", "Which city?", "San Jose  please", "Done."]) == [
        "book a table", "San Jose please"]
    assert cleaning.without_name_placeholder(["Go [NAME]! You rock. Love it"]) == ["You rock. Love it"]
    assert cleaning.irc_lines(["see http://x.org/a for it", "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3.4.5.6.7"]) == [
        "see for it"]


def test_read_lines_reads_xz_like_plain_text_and_names_a_broken_file(tmp_path):
    text = "first line\nsecond, with é\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "a.txt.xz").write_bytes(lzma.compress(text.encode()))
    assert list(read_text_lines(tmp_path / "a.txt.xz")) == list(read_text_lines(tmp_path / "a.txt"))
    assert corpus.content_sha256(tmp_path / "a.txt.xz") == corpus.content_sha256(tmp_path / "a.txt")
    (tmp_path / "cut.txt.xz").write_bytes(lzma.compress(text.encode())[:-9])
    with pytest.raises(ValueError, match="cut.txt.xz"):
        list(read_text_lines(tmp_path / "cut.txt.xz"))
    (tmp_path / "latin.txt.xz").write_bytes(lzma.compress("caf\xe9\n".encode("latin-1")))
    with pytest.raises(ValueError, match="latin.txt.xz: not UTF-8 text"):
        list(read_text_lines(tmp_path / "latin.txt.xz"))


def test_unknown_source_is_named():
    with pytest.raises(ValueError, match="nonesuch"):
        corpus.train_files(sources=["self_dialogue", "nonesuch"])


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


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "."]), max_size=25), max_size=8),
       st.integers(1, 5))
def test_windows_take_equals_window_arrays(texts, context_length):
    lines = list(Tokenizer().iter_lines(" ".join(t) for t in texts))
    vocab = Vocabulary.build(lines, size=3, personal_slots=1)
    x, y = corpus.window_arrays(lines, vocab, context_length)
    w = corpus.Windows.from_lines(lines, vocab, context_length)
    wx, wy = w.take(np.arange(len(w)))
    assert len(w) == len(y) and np.array_equal(wx, x) and np.array_equal(wy, y) and np.array_equal(w.targets, y)
