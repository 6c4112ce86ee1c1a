"""``edgekit install``: a device takes the next global version of its model."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import emit, json_option, load_model, model_option, state_dir_option, unsigned_local_option, user_errors

if TYPE_CHECKING:
    from ..model import EdgeModel


@click.command()
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--verify-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The server's verification key (the .signing.pub file from `edgekit keygen`); "
                   "trusted from now on [default: the keys this device already trusts].")
@unsigned_local_option
@model_option("The version in use now [default: the one installed in the state folder, else the bundled model].")
@state_dir_option
@json_option
@user_errors
def install(new, verify_key, unsigned_local, model_path, state_dir, as_json):
    """Install NEW, the next global version of this device's model (from `edgekit aggregate`).

    NEW must be signed by a trusted server key, have the installed model's
    body and vocabulary, and descend from the installed version (an older
    or a sibling version is refused). The user's personalization is kept;
    from now on every device command uses NEW by default.
    """
    from ..errors import StateError
    from ..installed import lineage

    try:
        # The version being replaced: NEW passes its own trust check, and this one only has to be what NEW
        # descends from, so a -m file converted locally is read as "unsigned, local" without the flag.
        m = load_model(model_path, state_dir, unsigned_local=True)
    except StateError:  # perhaps an install killed between saving the state and recording the version
        m, before, trust = _finish_interrupted(new, verify_key, unsigned_local, model_path, state_dir)
    else:
        before = m.fingerprint
        trust = m.install_global(new, verify_key=verify_key, unsigned_local=unsigned_local)
    report = {"installed": m.fingerprint, "previous": before, "trust": trust, "file": str(m.path),
              "lineage": lineage(m.file), "personal_words": len(m.state.personal_words)}
    emit(report, as_json, lambda r: f"installed {r['installed']} (from {r['previous']}, {r['trust']}); "
                                    f"kept {r['personal_words']} personal words\nfile: {r['file']}")


def _finish_interrupted(new: Path, verify_key: Path | None, unsigned_local: bool, model_path: Path | None,
                        state_dir: Path | None) -> tuple[EdgeModel, str, str]:
    """Finish an install that saved the state (re-bound to NEW) but was killed before it recorded NEW.

    NEW passes the same checks against the version still recorded; then the
    state must be NEW's, or the original state error stands.
    """
    from ..installed import check_descends, check_trust, record_install
    from ..model import EdgeModel, resolve_model_path
    from ..modelfile import read_model_file
    from ..paths import default_state_dir

    folder = state_dir or default_state_dir()
    installed = read_model_file(resolve_model_path(model_path, folder))
    file = read_model_file(new)
    trust = check_trust(file, new, folder, verify_key, unsigned_local)
    check_descends(installed, file, new)
    # NEW passed check_trust just above; loading it again raises the state error unless the state is NEW's.
    m = EdgeModel.load(new, state_dir=folder, unsigned_local=True)
    m.path = record_install(folder, file, trust, verify_key)
    return m, installed.fingerprint, trust
