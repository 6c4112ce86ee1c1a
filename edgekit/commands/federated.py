"""``edgekit keygen``, ``export-update``, ``aggregate``: the federated round from a shell."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..federated.delta import DEFAULT_CLIP_NORM
from ..federated.update import UPDATE_SUFFIX

PASSPHRASE_ENV = "EDGEKIT_KEY_PASSPHRASE"

_passphrase_file = click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
                                help=f"Read the key passphrase from this file (or set ${PASSPHRASE_ENV}).")
_json = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_POSITIVE = click.FloatRange(min=0, min_open=True)
_NON_NEGATIVE = click.FloatRange(min=0)
# One default on both sides: an update made with it is accepted by a round that keeps it.
_CLIP_HELP = "L2 bound of a device's head delta, which the round requires of every update"


@click.command()
@click.option("-o", "--out", "private_path", type=click.Path(dir_okay=False, path_type=Path),
              default="server.key", show_default=True, help="Private key file (written 0600).")
@click.option("--public", "public_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key file for devices [default: <out>.pub].")
@_passphrase_file
@click.option("--ask-passphrase", is_flag=True, help="Prompt for a passphrase to encrypt the private key.")
@click.option("--force", is_flag=True, help="Replace an existing key (updates sealed to it become unreadable).")
@_json
def keygen(private_path, public_path, passphrase_file, ask_passphrase, force, as_json):
    """Make the server's HPKE key pair; give devices only the .pub file."""
    from ..federated.keys import KeyFileError, generate_keypair, key_id

    passphrase = _passphrase(passphrase_file, ask_passphrase, confirm=True)
    public_path = public_path or private_path.with_name(private_path.name + ".pub")
    try:
        public = generate_keypair(private_path, public_path, passphrase=passphrase, overwrite=force)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
    _emit(as_json, {"private_key": str(private_path), "public_key": str(public_path), "key_id": key_id(public),
                    "encrypted": passphrase is not None},
          f"private key: {private_path} (0600{', passphrase-protected' if passphrase else ''})\n"
          f"public key:  {public_path} (key id {key_id(public)}) - give this one to devices")


@click.command("export-update")
@click.option("--server-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The server's public key (from `edgekit keygen`).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Model file [default: the bundled model].")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Personal state folder [default: $EDGEKIT_STATE_DIR or the per-user data folder].")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help=f"Update file to write (e.g. update{UPDATE_SUFFIX}).")
@click.option("--clip-norm", type=_POSITIVE, default=DEFAULT_CLIP_NORM, show_default=True,
              help=f"{_CLIP_HELP} (the default clips only unusually large updates).")
@click.option("--noise-multiplier", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Gaussian noise std as a multiple of the clip norm (local DP).")
@click.option("--encoding", type=click.Choice(["float16", "int8"]), default="float16", show_default=True)
@_json
def export_update(server_key, model_path, state_dir, out, clip_norm, noise_multiplier, encoding, as_json):
    """Seal this device's personal head delta for the server (personal words stay here).

    An update carries what was learned since the previous export (or since
    the model version was installed); exporting consumes it. Deliver every
    update: one that never reaches the server is lost to the federation
    (the device keeps its personalization).
    """
    from .. import EdgeModel
    from ..federated.keys import KeyFileError, load_public_key
    from ..federated.update import export_update as export, parse_update

    try:
        public = load_public_key(server_key)
        model = EdgeModel.load(model_path, state_dir=state_dir)
        data = export(model, public, out, clip_norm=clip_norm,
                      noise_multiplier=noise_multiplier, encoding=encoding)
    except (KeyFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    header = parse_update(data)[0]
    _emit(as_json, {"path": str(out), "bytes": len(data), "update_id": header.update_id,
                    "model_fingerprint": header.model_fingerprint, "n_examples": header.n_examples,
                    "clip_norm": header.clip_norm, "noise_multiplier": header.noise_multiplier,
                    "encoding": header.encoding},
          f"wrote {out} ({len(data):,} bytes, {header.n_examples} examples, update id {header.update_id})")


@click.command()
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The server's private key.")
@_passphrase_file
@click.option("--ask-passphrase", is_flag=True, help="Prompt for the private key's passphrase.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The model version the updates were made against.")
@click.argument("updates", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="New model file (new head, new fingerprint).")
@click.option("--mode", type=click.Choice(["fedavg", "median", "trimmed-mean"]), default="fedavg",
              show_default=True, help="fedavg weights by examples; median / trimmed-mean resist poisoned updates.")
@click.option("--trim", type=click.FloatRange(0, 0.5, max_open=True), default=0.1, show_default=True,
              help="Fraction cut at each end (trimmed-mean).")
@click.option("--clip-norm", type=_POSITIVE, default=DEFAULT_CLIP_NORM, show_default=True,
              help=f"{_CLIP_HELP}; devices must export with the same value.")
@click.option("--noise-multiplier", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Noise multiplier this round requires.")
@click.option("--central-noise-multiplier", type=_NON_NEGATIVE, default=0.0, show_default=True,
              help="Central DP: Gaussian noise on the sum of clipped updates (unweighted fedavg only).")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Cap on one update's FedAvg weight [default: 10000].")
@click.option("--seen-ids", type=click.Path(dir_okay=False, path_type=Path),
              help="Ledger of update ids already aggregated; accepted ids are appended.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where robust modes keep their temporary disk-backed matrix.")
@click.option("--sampling-rate", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Per-round participation probability (privacy report only).")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds a device joins (privacy report only).")
@click.option("--delta", "dp_delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-6,
              show_default=True, help="DP delta for the report.")
@_json
def aggregate(key_path, passphrase_file, ask_passphrase, model_path, updates, out, mode, trim, clip_norm,
              noise_multiplier, central_noise_multiplier, max_examples, seen_ids, workdir, sampling_rate, rounds,
              dp_delta, as_json):
    """Verify, decrypt and aggregate UPDATES (files or folders) into a new model version."""
    from ..federated import aggregate as agg
    from ..federated.install import install_delta
    from ..federated.keys import KeyFileError, key_id, load_private_key
    from ..federated.update import DEFAULT_MAX_EXAMPLES, UpdatePolicy
    from ..modelfile import ModelFileError, read_model_file

    try:
        private = load_private_key(key_path, _passphrase(passphrase_file, ask_passphrase, confirm=False))
        meta = read_model_file(model_path).metadata
    except (KeyFileError, ModelFileError) as e:
        raise click.ClickException(str(e)) from None
    policy = UpdatePolicy(model_fingerprint=meta["fingerprint"],
                          shape=(meta["feature_dim"], meta["vocab_size"] - meta.get("personal_slots", 0)),
                          key_id=key_id(private.public_key()), clip_norm=clip_norm,
                          noise_multiplier=noise_multiplier, max_examples=max_examples or DEFAULT_MAX_EXAMPLES)
    paths = _expand(updates)
    ledger = _read_ledger(seen_ids)
    on_reject = None if as_json else (lambda r: click.echo(f"rejected {r.source}: {r.reason}: {r.message}", err=True))
    try:
        result = agg.aggregate_updates(paths, private, policy, mode=mode, trim=trim, seen_ids=ledger,
                                       workdir=workdir, central_noise_multiplier=central_noise_multiplier,
                                       on_reject=on_reject)
        new = install_delta(model_path, result.delta, out)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if seen_ids is not None:
        _write_ledger(seen_ids, ledger, result.update_ids)
    report = _summary(result, policy, new.metadata, out, mode, len(paths))
    if noise_multiplier > 0 or central_noise_multiplier > 0:
        from ..federated.privacy import dp_epsilon

        kind = "local" if noise_multiplier > 0 else "central"
        report["privacy"] = {"kind": kind, **dp_epsilon(noise_multiplier or central_noise_multiplier,
                                                        sampling_rate=sampling_rate, rounds=rounds,
                                                        delta=dp_delta).to_dict()}
    _emit(as_json, report, _summary_text(report))


def _summary(result, policy, meta, out, mode, n_files) -> dict:
    return {"out": str(out), "mode": mode, "files": n_files, "accepted": result.accepted,
            "rejected": [{"source": r.source, "reason": r.reason, "message": r.message} for r in result.rejections],
            "total_examples": result.total_examples, "clip_norm": policy.clip_norm,
            "noise_multiplier": policy.noise_multiplier, "fingerprint": meta["fingerprint"],
            "parent_fingerprint": meta["parent_fingerprint"]}


def _summary_text(report: dict) -> str:
    lines = [f"accepted {report['accepted']} of {report['files']} updates ({report['total_examples']} examples), "
             f"{len(report['rejected'])} rejected; mode {report['mode']}",
             f"wrote {report['out']}: model {report['fingerprint']} (from {report['parent_fingerprint']})"]
    if "privacy" in report:
        p = report["privacy"]
        lines.append(f"privacy per device ({p['kind']} noise): epsilon {p['epsilon']:.3g} at delta {p['delta']:g} "
                     f"(noise x{p['noise_multiplier']:g}, sampling {p['sampling_rate']:g}, "
                     f"{p['rounds']} rounds, {p['accountant']} accountant)")
    return "\n".join(lines)


def _expand(paths) -> list[Path]:
    """Folders stand for the update files inside them (sorted, for reproducible results)."""
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob(f"*{UPDATE_SUFFIX}")) if p.is_dir() else [p])
    return out


def _read_ledger(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _write_ledger(path: Path, old: set[str], new_ids: list[str]) -> None:
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(path, "".join(f"{i}\n" for i in sorted(old | set(new_ids))).encode())


def _passphrase(path: Path | None, ask: bool, confirm: bool) -> bytes | None:
    """From a file, a prompt, or the environment; an empty one is an error, never "no passphrase"."""
    if path is not None:
        try:
            secret = path.read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise click.ClickException(f"{path}: cannot read passphrase ({e.strerror})") from None
    elif ask:
        secret = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm).encode()
    elif PASSPHRASE_ENV in os.environ:
        secret = os.environ[PASSPHRASE_ENV].encode()
    else:
        return None
    if not secret:
        raise click.ClickException("the key passphrase is empty")
    return secret


def _emit(as_json: bool, data: dict, text: str) -> None:
    click.echo(json.dumps(data, indent=1) if as_json else text)
