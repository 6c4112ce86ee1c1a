"""``edgekit words``: what personalization learned, and forgetting a word on request."""
from __future__ import annotations

import click

from .common import emit, json_option, load_model, model_options, user_errors


@click.group(invoke_without_command=True)
@model_options
@json_option
@click.pass_context
@user_errors
def words(ctx, model_path, unsigned_local, state_dir, as_json):
    """List the personal words learned (with counts) and how many phrases the phrase memory holds.

    `edgekit words forget WORD` removes a word; `edgekit words forget --all-phrases`
    empties the phrase memory.
    """
    if ctx.invoked_subcommand is not None:
        return
    m = load_model(model_path, state_dir, unsigned_local=unsigned_local)
    data = {"words": [w.to_dict() for w in m.learned_words()], "phrases": m.state.phrases.n_phrases,
            "phrase_tokens": len(m.state.phrases)}
    emit(data, as_json, _human)


@words.command()
@click.argument("word", required=False)
@click.option("--all-phrases", is_flag=True, help="Empty the whole phrase memory (the personal words and head stay).")
@model_options
@json_option
@user_errors
def forget(word, all_phrases, model_path, unsigned_local, state_dir, as_json):
    """Remove WORD from the personal words, the phrase memory, the kept held-out text and the pending update.

    The state is saved atomically: interrupted, it is as before or as after.
    """
    if (word is None) == (not all_phrases):
        raise click.UsageError("give a WORD to forget, or --all-phrases (not both)")
    m = load_model(model_path, state_dir, unsigned_local=unsigned_local)
    if all_phrases:
        m.forget_phrases()
        emit({"forgot": "all phrases"}, as_json, lambda d: "phrase memory emptied")
        return
    try:
        m.forget_word(word)
    except KeyError:
        raise click.ClickException(f"{word!r} is not among what this model learned: nothing forgotten "
                                   "(see `edgekit words`)") from None
    emit({"forgot": word}, as_json, lambda d: f"forgot {word!r}: its slot, phrases, held-out lines and the "
                                              "pending update are gone")


def _human(data: dict) -> str:
    lines = [f"{w['word']:20} {w['count']:6} seen  {w['phrases']:5} phrases" for w in data["words"]]
    lines.append(f"{len(data['words'])} personal words; phrase memory: {data['phrases']} phrases "
                 f"from {data['phrase_tokens']} words")
    return "\n".join(lines)
