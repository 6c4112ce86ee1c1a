"""Reading zip archives and ``.npz`` arrays without trusting the sizes they claim.

Model files and personal state are zip archives, and a zip entry of a few
hundred kilobytes can inflate to gigabytes. So nothing here inflates an
entry whole: entries are read in chunks and refused the moment they pass
their limit (checked while inflating, not after), arrays are refused by the
shape and type in their ``.npy`` header before their data is read, and every
way a damaged archive can fail (a bad CRC, ``zlib.error``, a truncated
stream, an unsupported or encrypted entry) becomes one ``ValueError``
subclass, ``Unreadable``, that callers turn into their own error class
with the file's name and what to do.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from typing import IO, NamedTuple

import numpy as np

CHUNK = 1 << 16
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
                ValueError, zipfile.LargeZipFile, KeyError)


class Unreadable(ValueError):
    """An archive, entry or array that is damaged or over a limit; the message says which."""


class ArraySpec(NamedTuple):
    """What one array must be: its dtype (``"<f4"``, ``"<i8"``, ``"|u1"``) and shape (``None``: any length there)."""

    dtype: str
    shape: tuple[int | None, ...]
    max_bytes: int = 1 << 30


def open_zip(data: bytes | IO[bytes], max_entries: int) -> zipfile.ZipFile:
    """The archive in ``data``: at most ``max_entries`` entries, unique names, stored or deflated, not encrypted."""
    try:
        z = zipfile.ZipFile(data if not isinstance(data, bytes) else io.BytesIO(data))
    except _READ_ERRORS as e:
        raise Unreadable(f"not a readable zip archive ({_reason(e)})") from None
    infos = z.infolist()
    if len(infos) > max_entries:
        raise Unreadable(f"{len(infos)} entries in the archive (at most {max_entries})")
    if len({i.filename for i in infos}) != len(infos):
        raise Unreadable("two entries in the archive have the same name")
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 0x1:
            raise Unreadable(f"entry {info.filename!r} is encrypted or uses an unsupported compression")
    return z


def read_entry(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Entry ``name`` inflated, refused as soon as it passes ``limit`` bytes (whatever its header claims)."""
    try:
        info = z.getinfo(name)
    except KeyError:  # a damaged name in the directory reads as a missing entry
        raise Unreadable(f"no entry {name!r} in the archive") from None
    if info.file_size > limit:
        raise Unreadable(f"entry {name!r} inflates to {info.file_size} bytes (at most {limit})")
    try:
        with z.open(info) as f:
            return _read_capped(f, limit, f"entry {name!r}")
    except _READ_ERRORS as e:
        raise Unreadable(f"entry {name!r} is damaged ({_reason(e)})") from None


def read_npz(data: bytes | IO[bytes], specs: dict[str, ArraySpec], required: set[str],
             max_entries: int = 32) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` named in ``specs``, each checked by its header before its data is read.

    An array not in ``specs`` is refused (nothing unknown is loaded), one in
    ``required`` must be there.
    """
    z = open_zip(data, max_entries)
    arrays = {}
    for info in z.infolist():
        key = info.filename.removesuffix(".npy")
        if key not in specs:
            raise Unreadable(f"unexpected array {info.filename!r}")
        arrays[key] = _read_array(z, info, key, specs[key])
    missing = required - arrays.keys()
    if missing:
        raise Unreadable(f"missing array {sorted(missing)[0]!r}")
    return arrays


def _read_array(z: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, spec: ArraySpec) -> np.ndarray:
    try:
        with z.open(info) as f:
            shape, fortran, dtype = _header(f)
            _check_spec(key, shape, dtype, spec)
            raw = _read_exactly(f, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, f"array {key!r}")
    except _READ_ERRORS as e:
        if isinstance(e, Unreadable):
            raise
        raise Unreadable(f"array {key!r} is damaged ({_reason(e)})") from None
    return raw.view(dtype).reshape(shape, order="F" if fortran else "C")


def _read_exactly(f: IO[bytes], n: int, what: str) -> np.ndarray:
    """``n`` bytes of ``f``, which must end there, read in place into one new array: a state's
    [F, V] arrays are megabytes each, and reading into a growing buffer, then copying it twice
    (bytes, then a writable array), held three times that while a keyboard process loads."""
    out = np.empty(n, np.uint8)
    view, got = out.data, 0
    while got < n:
        chunk = f.read(min(CHUNK, n - got))
        if not chunk:
            raise Unreadable(f"{what} is truncated")
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    if f.read(1):
        raise Unreadable(f"{what} inflates past {n} bytes")
    return out


def _header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise Unreadable(f".npy format version {version} is not one numpy's savez writes")


def _check_spec(key: str, shape: tuple[int, ...], dtype: np.dtype, spec: ArraySpec) -> None:
    if dtype.hasobject or dtype.str != spec.dtype:
        raise Unreadable(f"array {key!r} has type {dtype.str}, expected {spec.dtype}")
    fits = len(shape) == len(spec.shape) and all(w is None or d == w for d, w in zip(shape, spec.shape, strict=True))
    if not fits:
        want = tuple("n" if w is None else w for w in spec.shape)
        raise Unreadable(f"array {key!r} has shape {shape}, expected {want}")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > spec.max_bytes:
        raise Unreadable(f"array {key!r} holds {nbytes} bytes (at most {spec.max_bytes})")


def _read_capped(f: IO[bytes], limit: int, what: str) -> bytes:
    """Read ``f`` to its end in chunks, refusing it once it passes ``limit`` bytes."""
    out = bytearray()
    while True:
        chunk = f.read(min(CHUNK, limit + 1 - len(out)))
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise Unreadable(f"{what} inflates past {limit} bytes")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:160] if text else type(e).__name__
