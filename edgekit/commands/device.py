"""Device commands: info, suggest, personalize, reset (install: ``install.py``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import emit, json_option, load_model, model_options, user_errors

STDIN = "-"


@click.command()
@model_options
@json_option
@user_errors
def info(model_path, unsigned_local, state_dir, as_json):
    """Vocabulary size, context length, quantization, version (fingerprint) and its parents, runtime in use."""
    from ..federated.privacy import ledger_info

    m = load_model(model_path, state_dir, unsigned_local=unsigned_local)
    data = m.info().to_dict()
    data |= ledger_info(m.path)  # a server's version: the privacy spent on it (epsilon at delta), if recorded
    emit(data, as_json, lambda d: "\n".join(f"{k:18} {_shown(k, v)}" for k, v in d.items()))


def _shown(key: str, value: Any) -> str:
    """One ``edgekit info`` value as a person reads it."""
    from ..installed import LOCAL

    if key == "parents":
        return " <- ".join(value) or "(none)"
    return LOCAL if key == "origin" and value == "local" else str(value)


@click.command()
@click.argument("text", nargs=-1)
@click.option("--text-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Read the text from this UTF-8 file instead ('-': standard input).")
@click.option("-k", "k", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many suggestions: at most the model's top-k width (32 for `edgekit convert` files).")
@click.option("--allow-profanity", is_flag=True,
              help="Also suggest the words of edgekit's profanity list (left out by default).")
@model_options
@json_option
@user_errors
def suggest(text, text_file, k, allow_profanity, model_path, unsigned_local, state_dir, as_json):
    """Suggest the next word (or complete the word being typed) after TEXT.

    End TEXT with a space to get the next word; end it mid-word to complete
    it: `edgekit suggest "see you tomo"`. TEXT `-` (or --text-file FILE) reads
    it from standard input (or FILE); one final line break is dropped, so
    `echo "see you tomo" | edgekit suggest -` completes "tomo". No TEXT:
    how a message starts.
    """
    typed = _typed_text(text, text_file)
    m = load_model(model_path, state_dir, unsigned_local=unsigned_local)
    if allow_profanity:
        m.blocked_words = ()
    limit = m.max_k
    if k > limit:
        raise click.BadParameter(f"{k} is more suggestions than {m.path.name} ranks: choose 1..{limit} "
                                 "(the width of its word ranking)", param_hint="'-k'")
    out = [{"word": s.word, "probability": round(s.probability, 4)} for s in m.suggest(typed, k)]
    emit(out, as_json, lambda d: "\n".join(f"{s['word']:15} {s['probability']:.3f}" for s in d) or "(no suggestion)")


def _typed_text(words: tuple[str, ...], text_file: str | None) -> str:
    """TEXT as typed, from the arguments, standard input (``-``) or a file."""
    if text_file is not None and words:
        raise click.UsageError("give the text either as TEXT or with --text-file, not both")
    source = text_file if text_file is not None else STDIN if words == (STDIN,) else None
    if source is None:
        return " ".join(words)
    from ..tokenizer import not_utf8, require_text_file

    data = sys.stdin.buffer.read() if source == STDIN else require_text_file(source).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        name = "standard input" if source == STDIN else source
        raise not_utf8(name, data[e.start], data[: e.start].count(b"\n") + 1) from None
    return text.removesuffix("\n").removesuffix("\r")


@click.command()
@click.option("--text", "texts", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="UTF-8 text file(s) the user wrote; repeat for several.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Training epochs over the text.")
@model_options
@json_option
@user_errors
def personalize(texts, epochs, model_path, unsigned_local, state_dir, as_json):
    """Learn from the user's own text, on this device; nothing leaves it.

    Every 5th line is held out; the result is kept only if it beats the
    current suggestions there (top-3 before/after is reported).
    """
    from ..personal.train import TrainConfig
    from ..tokenizer import read_text_lines, require_text_file

    for t in texts:
        require_text_file(t)  # before the model loads
    m = load_model(model_path, state_dir, unsigned_local=unsigned_local)
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    lines = (line for t in texts for line in read_text_lines(t))
    report = m.personalize(lines, config, progress=not as_json)
    emit(report.to_dict(), as_json, _personalize_summary)


def _personalize_summary(r: dict) -> str:
    b, a = r["before"], r["after"]
    verdict = "adopted" if r["adopted"] else "kept the previous state (no improvement on held-out text)"
    return (f"held-out top-3 {b['top3']:.1%} -> {a['top3']:.1%}, top-1 {b['top1']:.1%} -> {a['top1']:.1%}: {verdict}\n"
            f"{r['train_examples']} training / {r['heldout_examples']} held-out words, "
            f"{len(r['new_personal_words'])} new personal words, {r['seconds']} s")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@model_options
@user_errors
def reset(yes, model_path, unsigned_local, state_dir):
    """Forget everything personal for this model (deletes the state file).

    Declining at the prompt deletes nothing and exits 0; with no answer
    (standard input closed: pass --yes in scripts) it exits 1.
    """
    from ..model import read_trusted
    from ..paths import default_state_dir
    from ..personal.state import state_path

    # The state is not loaded: reset works whatever it holds and whichever version is installed.
    folder = state_dir or default_state_dir()
    state_file = state_path(folder, read_trusted(model_path, folder, unsigned_local=unsigned_local).metadata["name"])
    if not state_file.exists():
        click.echo("nothing to reset: no personal state")
        return
    if not yes:
        try:
            confirmed = click.confirm(f"Delete {state_file}?")
        except click.Abort:  # end of input or Ctrl-C: no answer
            click.echo("\nnothing deleted (no answer; pass --yes to delete without asking)", err=True)
            raise SystemExit(1) from None
        if not confirmed:
            click.echo(f"nothing deleted: {state_file} is kept")
            return
    state_file.unlink()
    click.echo(f"removed {state_file}")
