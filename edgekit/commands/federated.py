"""``edgekit keygen``, ``device-key``, ``export-update``, ``enroll``, ``aggregate``: the federated round."""
from __future__ import annotations

import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import click

from ..federated import (
    DEFAULT_CLIP_NORM,
    DEFAULT_MODE,
    DEFAULT_TRIM,
    ENCODINGS,
    MODES,
    UPDATE_SUFFIX,
    AggregateResult,
    Rejection,
    UpdatePolicy,
)
from ..federated.hazmat.delta import DEFAULT_ENCODING
from ..federated.keys import PASSPHRASE_ENV
from .common import (
    CENTRAL_NOISE_HELP,
    LOCAL_NOISE_HELP,
    NON_NEGATIVE,
    POSITIVE,
    emit,
    json_option,
    model_option,
    out_option,
    state_dir_option,
    unsigned_local_option,
)

PUBLIC_PEM = b"-----BEGIN PUBLIC KEY-----"
PRIVATE_PEM = b"PRIVATE KEY-----"  # PKCS#8, encrypted or not

_passphrase_file = click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
                                help=f"Read the key passphrase from this file (or set ${PASSPHRASE_ENV}).")
# One default on both sides: an update made with it is accepted by a round that keeps it.
_CLIP_HELP = "L2 bound of a device's head delta, which the round requires of every update"


@click.command()
@out_option("Private key file (written 0600).", default="server.key", show_default=True)
@click.option("--public", "public_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Public key file for devices [default: <out>.pub].")
@_passphrase_file
@click.option("--ask-passphrase", is_flag=True, help="Prompt for a passphrase to encrypt the private keys.")
@click.option("--signing-only", is_flag=True,
              help="Make only the signing pair (a server made before signed versions, or a key rotation).")
@click.option("--force", is_flag=True, help="Replace existing keys (updates sealed to the old key become unreadable; "
                                            "devices must be given the new verification key).")
@json_option
def keygen(out, public_path, passphrase_file, ask_passphrase, signing_only, force, as_json):
    """Make the server's keys: the HPKE pair (updates) and the Ed25519 pair (signed versions).

    Give devices only the two public files: <out>.pub seals their updates,
    <stem>.signing.pub verifies the versions they install.
    """
    from ..federated.keys import KeyFileError, generate_keypair, generate_signing_key, key_id, signing_key_paths
    from ..signing import verify_key_id

    private_path = out
    signing_private, signing_public = signing_key_paths(private_path)
    for existing in ([] if signing_only else [private_path]) + [signing_private]:
        if existing.exists() and not force:  # before any passphrase prompt
            raise click.ClickException(f"{existing}: already exists; pass --force to replace it (updates sealed "
                                       "to an old key become unreadable, devices must trust a new signing key)")
    passphrase = _passphrase(passphrase_file, ask_passphrase, confirm=True)
    public_path = public_path or private_path.with_name(private_path.name + ".pub")
    report: dict = {"encrypted": passphrase is not None}
    try:
        if not signing_only:
            public = generate_keypair(private_path, public_path, passphrase=passphrase, overwrite=force)
            report.update(private_key=str(private_path), public_key=str(public_path), key_id=key_id(public))
        verify = generate_signing_key(signing_private, signing_public, passphrase=passphrase, overwrite=force)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
    report.update(signing_key=str(signing_private), verify_key=str(signing_public), verify_key_id=verify_key_id(verify))
    emit(report, as_json, _keygen_text)


def _keygen_text(r: dict) -> str:
    protected = ", passphrase-protected" if r["encrypted"] else ""
    lines = [f"private key: {r['private_key']} (0600{protected})",
             f"public key:  {r['public_key']} (key id {r['key_id']}) - give this one to devices"] \
        if "private_key" in r else []
    return "\n".join(lines + [f"signing key: {r['signing_key']} (0600{protected})",
                              f"verify key:  {r['verify_key']} (key id {r['verify_key_id']}) - devices install "
                              "only versions it verifies"])


@click.command("export-update")
@click.option("--server-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The server's public key (the .pub file from `edgekit keygen`).")
@model_option()
@unsigned_local_option
@state_dir_option
@out_option(f"Update file to write (e.g. update{UPDATE_SUFFIX}).", required=True)
@click.option("--clip-norm", type=POSITIVE, default=DEFAULT_CLIP_NORM, show_default=True,
              help=f"{_CLIP_HELP} (the default clips only unusually large updates).")
@click.option("--noise-multiplier", type=NON_NEGATIVE, default=0.0, show_default=True, help=LOCAL_NOISE_HELP)
@click.option("--encoding", type=click.Choice(ENCODINGS), default=DEFAULT_ENCODING, show_default=True,
              help="How the delta travels: float16, or int8 with one scale per word (half the bytes).")
@json_option
def export_update(server_key, model_path, unsigned_local, state_dir, out, clip_norm, noise_multiplier, encoding,
                  as_json):
    """Seal this device's personal head delta for the server (personal words stay here).

    The update is signed, inside the sealed payload, by this device's
    identity key (<state-dir>/device.key, made on first use; see
    `edgekit device-key`). An update carries what was learned since the previous export (or since
    the model version was installed); exporting consumes it. Deliver every
    update: one that never reaches the server is lost to the federation
    (the device keeps its personalization).
    """
    from .. import EdgeModel
    from ..federated import export_update as export
    from ..federated.hazmat import parse_update
    from ..federated.keys import KeyFileError, load_public_key

    try:
        _refuse_wrong_key(server_key, PRIVATE_PEM, "a private key: devices get only the public key "
                          f"({server_key.name}.pub beside it)")
        public = load_public_key(server_key)
        model = EdgeModel.load(model_path, state_dir=state_dir, unsigned_local=unsigned_local)
        identity = _device_identity(state_dir)
        data = export(model, public, out, clip_norm=clip_norm, noise_multiplier=noise_multiplier,
                      encoding=encoding, device_key=identity.pop("key"))
    except (KeyFileError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    header = parse_update(data)[0]
    report = {"path": str(out), "bytes": len(data), "update_id": header.update_id,
              "model_fingerprint": header.model_fingerprint, "n_examples": header.n_examples,
              "clip_norm": header.clip_norm, "noise_multiplier": header.noise_multiplier, "encoding": header.encoding,
              "device": identity}
    emit(report, as_json, _export_text)


def _export_text(r: dict) -> str:
    return "\n".join([f"wrote {r['path']} ({r['bytes']:,} bytes, {r['n_examples']} examples, update id "
                      f"{r['update_id']}), signed by device key {r['device']['key_id']}"] + _new_key_text(r["device"]))


@click.command("device-key")
@state_dir_option
@out_option("Also copy the public half here, to give to the server operator (`edgekit enroll`).")
@json_option
def device_key(state_dir, out, as_json):
    """Show this device's identity key (made now if there is none); the server operator enrolls its public half.

    The private half (device.key, 0600) never leaves the state folder; it
    signs every update this device exports.
    """
    from ..atomic import atomic_write_bytes
    from ..federated.keys import KeyFileError

    try:
        identity = _device_identity(state_dir)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
    del identity["key"]
    if out is not None:
        atomic_write_bytes(out, Path(identity["public_key"]).read_bytes())
        identity["copied_to"] = str(out)
    emit(identity, as_json, _device_key_text)


def _device_key_text(r: dict) -> str:
    copied = f" (copied to {r['copied_to']})" if "copied_to" in r else ""
    return "\n".join([f"device key {r['key_id']}: {r['public_key']}{copied}"] + _new_key_text(r))


def _device_identity(state_dir: Path | None) -> dict:
    """The device key of ``state_dir`` (the default state folder if None), made on first use, and what to report."""
    from ..federated.keys import device_key, device_key_paths
    from ..paths import default_state_dir
    from ..signing import verify_key_id

    folder = state_dir or default_state_dir()
    key, created = device_key(folder)
    return {"key": key, "key_id": verify_key_id(key.public_key()), "public_key": str(device_key_paths(folder)[1]),
            "created": created}


def _new_key_text(identity: dict) -> list[str]:
    if not identity["created"]:
        return []
    return [f"made this device's identity key; give {identity['public_key']} to the server operator, who enrolls it "
            "with `edgekit enroll DEVICE.pub --registry FILE`"]


@click.command()
@click.argument("device_pub", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--registry", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The registry of enrolled device keys (made if missing); pass it to `edgekit aggregate --devices`.")
@json_option
def enroll(device_pub, registry, as_json):
    """Enroll a device: add its public key (the device.pub of `edgekit device-key`) to the registry.

    A round aggregated with `--devices REGISTRY` counts one update per
    enrolled device and refuses the rest. Enroll each device once, against
    something costly to multiply (an account, a device attestation): the
    registry is what stops one party from counting as many. To revoke a
    device, delete its PEM block from the registry.
    """
    from ..federated.keys import KeyFileError, enroll_device

    try:
        kid, added = enroll_device(device_pub, registry)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
    report = {"key_id": kid, "registry": str(registry), "added": added}
    emit(report, as_json, lambda r: f"{'enrolled' if r['added'] else 'already enrolled:'} device key {r['key_id']} "
                                    f"in {r['registry']}")


@click.command()
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The server's private key.")
@_passphrase_file
@click.option("--ask-passphrase", is_flag=True, help="Prompt for the private key's passphrase.")
@model_option("The model version the updates were made against.", required=True, exists=True)
@click.argument("updates", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@out_option("New model file (new head, new fingerprint).", required=True)
@click.option("--mode", type=click.Choice(MODES),
              help=f"{DEFAULT_MODE} and median resist a hostile minority; fedavg weights by examples and resists "
                   f"none [default: {DEFAULT_MODE}; fedavg with --central-noise-multiplier].")
@click.option("--trim", type=click.FloatRange(0, 0.5, max_open=True), default=DEFAULT_TRIM, show_default=True,
              help="Fraction cut at each end (trimmed-mean): the share of hostile updates it survives.")
@click.option("--clip-norm", type=POSITIVE, default=DEFAULT_CLIP_NORM, show_default=True,
              help=f"{_CLIP_HELP}; devices must export with the same value.")
@click.option("--noise-multiplier", type=NON_NEGATIVE, default=0.0, show_default=True,
              help=f"The local noise this round requires of every update. {LOCAL_NOISE_HELP}")
@click.option("--central-noise-multiplier", type=NON_NEGATIVE, default=0.0, show_default=True,
              help=CENTRAL_NOISE_HELP)
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
              help="Most examples one update may claim; more is refused [default: 10000].")
@click.option("--devices", "registry", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Registry of enrolled device keys (`edgekit enroll`): only updates signed by an enrolled device "
                   "count, one per device (the first by file name); without it identities are not checked.")
@click.option("--seen-ids", type=click.Path(dir_okay=False, path_type=Path),
              help="Ledger of update ids already aggregated, refused as replays; accepted ids are appended "
                   "[default: <key>.seen-ids beside the key].")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Where robust modes keep their temporary disk-backed matrix.")
@click.option("--signing-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The server's signing key, same passphrase as --key [default: <key stem>.signing.key beside it].")
@click.option("--heldout", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Held-out UTF-8 text: an int8 model's new head scale is chosen so its top-3 there stays within "
                   "0.2 points of the float head (without it: max-abs, checked against the float weights only).")
@click.option("--sampling-rate", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Per-round participation probability (privacy report and ledger).")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds a device joins (privacy report only).")
@click.option("--delta", "dp_delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-6,
              show_default=True, help="DP delta for the report and the ledger.")
@json_option
def aggregate(key_path, passphrase_file, ask_passphrase, model_path, updates, out, mode, trim, clip_norm,
              noise_multiplier, central_noise_multiplier, max_examples, registry, seen_ids, workdir, signing_key,
              heldout,
              sampling_rate, rounds, dp_delta, as_json):
    """Verify, decrypt and aggregate UPDATES (files or folders) into a new, signed model version.

    The new head is written into the flatbuffer (devices run it at full
    speed); the float head is kept beside OUT for the next round
    (<stem>.float-head.npz: keep it with the model on the server).
    """
    from ..federated import DEFAULT_MAX_EXAMPLES, UpdatePolicy
    from ..federated import aggregate as agg
    from ..federated.install import install_delta
    from ..federated.keys import (
        KeyFileError,
        key_id,
        load_private_key,
        load_registry,
        load_signing_key,
        signing_key_paths,
    )
    from ..modelfile import ModelFileError, read_model_file
    from ..signing import verify_key_id
    from ..tokenizer import read_text_lines

    paths, skipped = _expand(updates)
    mode = mode or ("fedavg" if central_noise_multiplier > 0 else DEFAULT_MODE)
    seen_ids = seen_ids or key_path.with_name(key_path.name + ".seen-ids")
    try:
        _refuse_wrong_key(key_path, PUBLIC_PEM, "a public key (the .pub file devices get); --key needs the "
                          "server's private key, the file `edgekit keygen -o` wrote")
        passphrase = _passphrase(passphrase_file, ask_passphrase, confirm=False)
        private = load_private_key(key_path, passphrase)
        signing_path = signing_key or signing_key_paths(key_path)[0]
        if not signing_path.exists():
            raise KeyFileError(f"{signing_path}: no signing key; every version is signed: make one with "
                               f"`edgekit keygen -o {key_path} --signing-only`, or pass --signing-key")
        signer = load_signing_key(signing_path, passphrase)
        devices = None if registry is None else load_registry(registry)
        meta = read_model_file(model_path).metadata
    except (KeyFileError, ModelFileError) as e:
        raise click.ClickException(str(e)) from None
    policy = UpdatePolicy(model_fingerprint=meta["fingerprint"],
                          shape=(meta["feature_dim"], meta["vocab_size"] - meta.get("personal_slots", 0)),
                          key_id=key_id(private.public_key()), clip_norm=clip_norm,
                          noise_multiplier=noise_multiplier, max_examples=max_examples or DEFAULT_MAX_EXAMPLES)
    ledger = _read_ledger(seen_ids)
    on_reject = None if as_json else (lambda r: click.echo(f"rejected {r.source}: {r.reason}: {r.message}", err=True))
    if on_reject is not None:
        for r in skipped:
            on_reject(r)
    try:
        with _exit_on_sigterm():  # so that the robust modes' decrypted rows are removed
            result = agg.aggregate_updates(paths, private, policy, mode=mode, trim=trim, seen_ids=ledger,
                                           workdir=workdir, central_noise_multiplier=central_noise_multiplier,
                                           on_reject=on_reject, devices=devices)
        new = install_delta(model_path, result.delta, out, signing_key=signer,
                            heldout=None if heldout is None else read_text_lines(heldout))
        privacy_ledger = _privacy_ledger(model_path, out, meta["fingerprint"], new.fingerprint, result.accepted,
                                         central_noise_multiplier, sampling_rate, clip_norm, dp_delta)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    _write_ledger(seen_ids, ledger, result.update_ids)
    result.rejections[:0] = skipped
    report = _summary(result, policy, new.metadata, out, mode, len(paths) + len(skipped))
    report["signed_by"] = verify_key_id(signer.public_key())
    report["devices"] = {"checked": False} if devices is None else \
        {"checked": True, "registry": str(registry), "enrolled": len(devices)}
    if noise_multiplier > 0 or central_noise_multiplier > 0:
        from ..federated.privacy import dp_epsilon

        kind = "local" if noise_multiplier > 0 else "central"
        report["privacy"] = {"kind": kind, **dp_epsilon(noise_multiplier or central_noise_multiplier,
                                                        sampling_rate=sampling_rate, rounds=rounds,
                                                        delta=dp_delta).to_dict()}
    if privacy_ledger is not None:
        report["privacy_ledger"] = str(privacy_ledger)
    emit(report, as_json, _summary_text)


def _privacy_ledger(parent: Path, out: Path, parent_fingerprint: str, fingerprint: str, cohort: int, z: float,
                    sampling_rate: float, clip_norm: float, delta: float) -> Path | None:
    """With central noise, OUT's epsilon ledger (carried on from the parent's, as a Flower server writes one).

    Without, none, and none left beside OUT by an earlier file of that name:
    it would claim a privacy this version does not have.
    """
    from ..federated.privacy import ledger_path, next_ledger, write_ledger

    if z <= 0:
        ledger_path(out).unlink(missing_ok=True)
        return None
    return write_ledger(out, next_ledger(parent, fingerprint=fingerprint, parent_fingerprint=parent_fingerprint,
                                         noise_multiplier=z, sampling_rate=sampling_rate, cohort=cohort,
                                         clip_norm=clip_norm, delta=delta))


def _summary(result: AggregateResult, policy: UpdatePolicy, meta: dict, out: Path, mode: str,
             n_files: int) -> dict:
    return {"out": str(out), "mode": mode, "files": n_files, "accepted": result.accepted,
            "rejected": [{"source": r.source, "reason": r.reason, "message": r.message} for r in result.rejections],
            "total_examples": result.total_examples, "clip_norm": policy.clip_norm,
            "noise_multiplier": policy.noise_multiplier, "fingerprint": meta["fingerprint"],
            "parent_fingerprint": meta["parent_fingerprint"], "head_storage": meta["head_storage"]}


def _summary_text(report: dict) -> str:
    lines = [(f"accepted {report['accepted']} of {report['files']} updates ({report['total_examples']} examples), "
              f"{len(report['rejected'])} rejected; mode {report['mode']}"),
             _devices_text(report["devices"]),
             f"wrote {report['out']}: model {report['fingerprint']} (from {report['parent_fingerprint']}), "
             f"signed by {report['signed_by']}, head in {_storage_text(report['head_storage'])}"]
    if "privacy" in report:
        p = report["privacy"]
        lines.append(f"privacy per device ({p['kind']} noise): epsilon {p['epsilon']:.3g} at delta {p['delta']:g} "
                     f"(noise x{p['noise_multiplier']:g}, sampling {p['sampling_rate']:g}, "
                     f"{p['rounds']} rounds, {p['accountant']} accountant)")
    if "warning" in report["head_storage"]:
        lines.append(f"warning: {report['head_storage']['warning']}")
    if "privacy_ledger" in report:
        lines.append(f"privacy ledger: {report['privacy_ledger']} (`edgekit info -m {report['out']}` prints it)")
    return "\n".join(lines)


def _devices_text(devices: dict) -> str:
    if not devices["checked"]:
        return ("device identities not checked (no --devices registry): one party sending many updates counts as "
                "many devices")
    return (f"one update per device: every accepted update is signed by a distinct device of the "
            f"{devices['enrolled']} enrolled in {devices['registry']}")


def _storage_text(storage: dict) -> str:
    if storage["where"] != "flatbuffer":
        return f"{storage['where']} ({storage['why']}; devices rank on the host, slower)"
    if "int8_top3" in storage:
        return (f"the flatbuffer (int8 scale {storage['int8_scale']:.3g}: held-out top-3 {storage['int8_top3']:.1%} "
                f"vs float head {storage['float_top3']:.1%})")
    if "int8_scale" in storage:
        return (f"the flatbuffer (int8 scale {storage['int8_scale']:.3g}, weights within half a step, "
                f"{storage['int8_error']:.1%} error; top-3 unchecked: pass --heldout to check it)")
    return "the flatbuffer"


def _expand(paths: tuple[Path, ...]) -> tuple[list[Path], list[Rejection]]:
    """Folders stand for the update files inside them (sorted, for reproducible results).

    A folder's entry that is not a regular file (a FIFO would block the
    round, a device never end) or is a link leading out of the folder is
    skipped, with a reason for the report; a file named on the command line
    is read as given (``aggregate_updates`` refuses one that is not regular).
    A folder with none is named on stderr, and an error when nothing is
    left: aggregating zero files is a wrong path or a missed delivery.
    """
    out: list[Path] = []
    skipped, empty = [], []
    for p in paths:
        found = sorted(p.glob(f"*{UPDATE_SUFFIX}")) if p.is_dir() else [p]
        if not found:
            empty.append(str(p))
        for f in found:
            why = _not_an_update_file(f, p) if p.is_dir() else None
            if why:
                skipped.append(Rejection(str(f), "not-a-file", why))
            else:
                out.append(f)
    if not out:
        where = ", ".join(empty + [s.source for s in skipped])
        raise click.ClickException(f"no update files (*{UPDATE_SUFFIX}) in {where}")
    for folder in empty:
        click.echo(f"note: {folder}: no update files (*{UPDATE_SUFFIX}) in this folder", err=True)
    return out, skipped


def _not_an_update_file(path: Path, folder: Path) -> str | None:
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        return f"a link to {path.resolve()}, outside {folder}; skipped"
    try:
        kind = path.stat().st_mode
    except OSError as e:
        return f"cannot read ({e.strerror}); skipped"
    return None if stat.S_ISREG(kind) else "not a regular file (a FIFO, a device or a folder); skipped"


@contextmanager
def _exit_on_sigterm():
    """SIGTERM raises ``SystemExit`` in here, so ``with`` blocks (the decrypted rows' folder) clean up.

    SIGINT already raises ``KeyboardInterrupt``; ``kill -9`` cannot be caught
    (the next aggregation removes what it left).
    """
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _refuse_wrong_key(path: Path, marker: bytes, what: str) -> None:
    """Name a swapped key file plainly; the key loaders can only say "not a PEM private/public key"."""
    try:
        head = path.read_bytes()[:256]
    except OSError:
        return  # the key loader reports an unreadable file
    if marker in head:
        raise click.ClickException(f"{path}: {what}")


def _read_ledger(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _write_ledger(path: Path, old: set[str], new_ids: list[str]) -> None:
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(path, "".join(f"{i}\n" for i in sorted(old | set(new_ids))).encode())


def _passphrase(path: Path | None, ask: bool, confirm: bool) -> bytes | None:
    """From a file, a prompt, or the environment (``keys.read_passphrase``); an empty one is an error."""
    from ..federated.keys import KeyFileError, read_passphrase

    if ask and path is None:
        secret = click.prompt("Key passphrase", hide_input=True, confirmation_prompt=confirm).encode()
        if not secret:
            raise click.ClickException("the key passphrase is empty")
        return secret
    try:
        return read_passphrase(path)
    except KeyFileError as e:
        raise click.ClickException(str(e)) from None
