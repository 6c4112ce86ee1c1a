"""Workstation side of edgekit: TensorFlow training and conversion to ``.tflite``.

The repository's ``converters/`` folder, installed as ``edgekit.converters``
(``pip install 'edgekit[convert]'``). It may import the device code; the device
code never imports it, except the CLI, inside the commands that need TensorFlow.

The bundled Keras model (``models/``) and text (``data/``) sit beside this
folder in the repository and are not packaged. In a source checkout (an
editable install, or tests run from the checkout) the defaults point at them;
installed from a wheel there is no checkout, so the defaults are ``None`` and
using one raises :class:`CheckoutFolderMissing` instead of reading or writing a
folder inside site-packages.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _source_checkout() -> Path | None:
    """The repository root when this package is its ``converters/`` folder, else None.

    From a wheel the parent is ``site-packages/edgekit``, which holds no ``pyproject.toml``.
    """
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() else None


SOURCE_CHECKOUT: Path | None = _source_checkout()


class CheckoutFolderMissing(FileNotFoundError):
    """A default that only a source checkout has (``models/``, ``data/``) was needed and is not there."""


def checkout_folder(name: str) -> Path | None:
    """``<checkout>/<name>`` in a source checkout; None when installed from a wheel."""
    return SOURCE_CHECKOUT / name if SOURCE_CHECKOUT else None


def missing_from_checkout(path: Path | None, instead: str) -> str:
    """Why a default model or text path is missing, and the two ways out."""
    where = (f"{path}: not found" if path is not None
             else f"edgekit.converters is installed without a source checkout ({PACKAGE_DIR})")
    return (f"{where}; the bundled Keras model and data/ ship with a source checkout: "
            f"run from one installed with pip install -e '.[convert]', or pass {instead}")


def require_checkout(path: Path | None, instead: str, *, exists: bool = True) -> Path:
    """``path`` (a default inside the source checkout), or :class:`CheckoutFolderMissing`.

    ``instead`` names the argument or option to pass explicitly. ``exists=False``
    is for an output default: the checkout must be there, the folder not yet.
    """
    if path is None or (exists and not path.exists()):
        raise CheckoutFolderMissing(missing_from_checkout(path, instead))
    return path
