"""Device commands: info, suggest, personalize, reset."""
from __future__ import annotations

from pathlib import Path

import click

from .common import emit, json_option, load_model, model_options, user_errors


@click.command()
@model_options
@json_option
@user_errors
def info(model_path, state_dir, as_json):
    """Vocabulary size, context length, quantization, fingerprint, runtime in use."""
    data = load_model(model_path, state_dir).info().to_dict()
    emit(data, as_json, lambda d: "\n".join(f"{k:18} {v}" for k, v in d.items()))


@click.command()
@click.argument("text", nargs=-1)
@click.option("-k", "k", default=3, show_default=True, help="How many suggestions.")
@model_options
@json_option
@user_errors
def suggest(text, k, model_path, state_dir, as_json):
    """Suggest the next word (or complete the word being typed) after TEXT.

    End TEXT with a space to get the next word; end it mid-word to complete
    it: `edgekit suggest "see you tomo"`.
    """
    m = load_model(model_path, state_dir)
    out = [{"word": s.word, "probability": round(s.probability, 4)} for s in m.suggest(" ".join(text), k)]
    emit(out, as_json, lambda d: "\n".join(f"{s['word']:15} {s['probability']:.3f}" for s in d) or "(no suggestion)")


@click.command()
@click.option("--text", "texts", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="UTF-8 text file(s) the user wrote; repeat for several.")
@click.option("--epochs", default=None, type=int, help="Training epochs over the text.")
@model_options
@json_option
@user_errors
def personalize(texts, epochs, model_path, state_dir, as_json):
    """Learn from the user's own text, on this device; nothing leaves it.

    Every 5th line is held out; the result is kept only if it beats the
    current suggestions there (top-3 before/after is reported).
    """
    from ..personal.train import TrainConfig
    from ..tokenizer import read_text_lines

    for t in texts:
        if not t.exists():
            raise click.ClickException(f"{t}: no such text file")
    m = load_model(model_path, state_dir)
    config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    lines = (line for t in texts for line in read_text_lines(t))
    report = m.personalize(lines, config, progress=not as_json)
    emit(report.to_dict(), as_json, _personalize_summary)


def _personalize_summary(r) -> str:
    b, a = r["before"], r["after"]
    verdict = "adopted" if r["adopted"] else "kept the previous state (no improvement on held-out text)"
    return (f"held-out top-3 {b['top3']:.1%} -> {a['top3']:.1%}, top-1 {b['top1']:.1%} -> {a['top1']:.1%}: {verdict}\n"
            f"{r['train_examples']} training / {r['heldout_examples']} held-out words, "
            f"{len(r['new_personal_words'])} new personal words, {r['seconds']} s")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@model_options
@user_errors
def reset(yes, model_path, state_dir):
    """Forget everything personal for this model (deletes the state file)."""
    m = load_model(model_path, state_dir)
    if m.state_file is None or not m.state_file.exists():
        click.echo("nothing to reset: no personal state")
        return
    if not yes:
        click.confirm(f"Delete {m.state_file}?", abort=True)
    m.reset()
    click.echo(f"removed {m.state_file}")
