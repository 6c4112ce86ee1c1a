"""The one tokenizer: the converter and the device must cut text identically."""
from __future__ import annotations

import lzma
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekit.tokenizer import _LETTER, BOS, EOS, NUM, Tokenizer, TokenizerConfig, _word, read_text_lines

tok = Tokenizer()
# The partial word's definition as a search (quadratic on long runs; split_partial finds it in one backward match).
_PARTIAL_RE = re.compile(rf"{_word(_LETTER)}'?$")


@pytest.mark.parametrize("text, tokens", [
    ("Hello World", ["hello", "world"]),
    ("don't stop, it's o'clock", ["don't", "stop", "it's", "o'clock"]),
    ("don\u2019t", ["don't"]),                          # curly apostrophe
    ("'quoted' words'", ["quoted", "words"]),           # outer apostrophes are not part of a word
    ("in 2026 it cost 3.14 or 1,000", ["in", "<num>", "it", "cost", "<num>", "or", "<num>"]),
    ("3pm and 4th", ["3pm", "and", "4th"]),             # digits inside a word stay a word
    ("stop. go! really?! ok", ["stop", EOS, "go", EOS, "really", EOS, "ok"]),
    ("wait... what", ["wait", EOS, "what"]),
    ("snake_case e-mail", ["snake", "case", "e", "mail"]),
    ("ﬁne Ｆｕｌｌ", ["fine", "full"]),                     # NFKC: ligature and full-width letters
    ("Café naïve Straße", ["café", "naïve", "straße"]),
    ("   \t\n", []),
    ("🙂 :-) #tag @you", ["tag", "you"]),
])
def test_tokenize_edge_cases(text, tokens):
    assert tok.tokenize(text) == tokens


def test_numbers_kept_when_configured():
    assert Tokenizer(TokenizerConfig(numbers_as_token=False)).tokenize("at 10:30") == ["at", "10:30"]


def test_lines_are_sentence_streams():
    assert list(tok.iter_lines(["Hi there.", "", "see you"])) == [
        [BOS, "hi", "there", EOS], [BOS, "see", "you", EOS]]


@pytest.mark.parametrize("text, context, prefix", [
    ("see you tomo", [BOS, "see", "you"], "tomo"),
    ("see you ", [BOS, "see", "you"], ""),
    ("", [BOS], ""),
    ("I don'", [BOS, "i"], "don'"),
    ("Done. Next", [BOS, "done", EOS], "next"),
    ("at 10", [BOS, "at"], "10"),
])
def test_split_partial(text, context, prefix):
    assert tok.split_partial(text) == (context, prefix)


@given(st.text(alphabet=st.sampled_from(list("ab1'’_ .,!?-\u00e9\u0301\t")), max_size=40))
def test_split_partial_matches_a_search_of_the_whole_text(text):
    """split_partial searches only the trailing word; the result must be the full search's."""
    norm = tok.normalize(text)
    m = _PARTIAL_RE.search(norm)
    expected_prefix = m.group(0) if m else ""
    expected_context = [BOS] + tok.tokenize(norm[: m.start()] if m else norm)
    assert tok.split_partial(text) == (expected_context, expected_prefix)


@given(st.text(max_size=60))
def test_tokens_are_words_or_markers(text):
    tokens = tok.tokenize(text)
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    assert all(not (a == b == EOS) for a, b in zip(tokens, tokens[1:]))
    assert all(t in (EOS, NUM) or any(c.isalnum() for c in t) for t in tokens)


@given(st.text(alphabet=st.sampled_from(list("aB1'`_ .,:!?-\t\n")), max_size=60))
def test_ascii_text_cuts_as_the_unicode_rules_do(text):
    """ASCII text takes a faster pattern; the Unicode one (forced by a trailing "¿", not a token) must agree."""
    assert tok.tokenize(text) == tok.tokenize(text + " \u00bf")


@given(st.text(alphabet=st.sampled_from(list("aZq'`.!?_ ,;:-\"<>/\t")), max_size=60))
def test_ascii_text_without_digits_cuts_as_the_pattern_does(text):
    """ASCII text with no digit is cut without the pattern (apostrophes and sentence ends by substitution):
    the tokens must be the pattern's (the Unicode one, forced by a trailing "¿")."""
    for t in (tok, Tokenizer(TokenizerConfig(lowercase=False))):
        assert t.tokenize(text) == t.tokenize(text + " \u00bf")
    assert tok.tokenize("'Tis Bob's dogs' ... toys?! Yes. 'no'") == ["tis", "bob's", "dogs", EOS, "toys", EOS,
                                                                      "yes", EOS, "no"]


@given(st.text(alphabet=st.sampled_from(list(".!?.!?.!? a'")), min_size=60, max_size=200))
def test_long_runs_of_sentence_ends_cut_as_the_pattern_does(text):
    """A run of more than 64 sentence-end characters is one over-long token to the pattern (``<unk>``):
    the no-digit path must not make it a sentence end."""
    assert tok.tokenize(text) == tok.tokenize(text + " \u00bf")
    assert tok.tokenize("hi " + "!" * 65 + " there") == ["hi", "<unk>", "there"]


@given(st.text(alphabet=st.sampled_from(list("aZq_ ,;:-\"()@#/\\[]{}\t\n\r\x0b\x0c\x1c\x7f")), max_size=80))
def test_ascii_words_cut_by_their_separators_as_the_pattern_does(text):
    """ASCII text with no sentence end, digit or apostrophe is cut at its separators without the
    pattern: the words must be the pattern's (the Unicode one, forced by a trailing "¿")."""
    for t in (tok, Tokenizer(TokenizerConfig(lowercase=False))):
        assert t.tokenize(text) == t.tokenize(text + " \u00bf")
    assert tok.tokenize("see " + "a" * 70 + ", you") == ["see", "<unk>", "you"]


@given(st.text(alphabet=st.sampled_from(list("ab1'. !?,-\n\t\u00e9\u0301\u00a0\u3000\u03a3\U0001f642")),
               min_size=30, max_size=200),
       st.integers(1, 4))
def test_the_end_of_a_long_text_gives_the_last_tokens_of_the_whole(text, keep):
    """split_partial(keep=N) tokenizes only the end of long text: its last N tokens must be the whole text's."""
    context, prefix = tok.split_partial(text, keep=keep)
    whole, whole_prefix = tok.split_partial(text)
    assert prefix == whole_prefix and context[-keep:] == whole[-keep:] and len(context) >= min(keep, len(whole))


def test_a_long_message_is_tokenized_from_its_end():
    text = "one two three. " * 1000 + "four five six seven "
    assert tok.split_partial(text, keep=4) == (["four", "five", "six", "seven"], "")  # not 4,000 tokens
    emoji = "one two three " * 100 + "\U0001f642 " * 40 + "four five six seven"
    assert tok.split_partial(emoji, keep=4) == (["three", "four", "five", "six"], "seven")  # reads further back
    assert tok.split_partial("one two " * 5, keep=4)[0][0] == BOS  # short text: whole, start marked


def test_read_text_lines_reads_xz_and_names_the_line_of_a_bad_byte_inside(tmp_path):
    good, bad, cut = tmp_path / "t.txt.xz", tmp_path / "b.txt.xz", tmp_path / "c.txt.xz"
    good.write_bytes(lzma.compress("one\ntwo\n".encode()))
    bad.write_bytes(lzma.compress(b"ok\nbad \xff\n"))
    cut.write_bytes(lzma.compress(b"ok\n" * 100)[:-9])
    assert list(read_text_lines(good)) == ["one\n", "two\n"]
    with pytest.raises(ValueError, match=r"b\.txt\.xz: not UTF-8 text \(bad byte 0xff on line 2\)"):
        list(read_text_lines(bad))
    with pytest.raises(ValueError, match=r"c\.txt\.xz: not a complete \.xz file"):
        list(read_text_lines(cut))
