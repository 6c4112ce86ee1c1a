"""Where edgekit keeps files of its own on a device.

One function, at the bottom of the import layers, so the state store, the
facade and the command line all agree on the folder.
"""
from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "EDGEKIT_STATE_DIR"
APP_NAME = "edgekit"


def default_state_dir() -> Path:
    """``$EDGEKIT_STATE_DIR`` when set, else the platform's per-user data folder.

    platformdirs knows each platform's convention (``$XDG_DATA_HOME`` or
    ``~/.local/share`` on Linux, ``~/Library/Application Support`` on macOS,
    ``%LOCALAPPDATA%`` on Windows, the app's files folder on Android), so a
    keyboard's personal state lands where the platform's backups and
    clean-ups expect it. No author folder on Windows: the path is
    ``%LOCALAPPDATA%\\edgekit``, as before.
    """
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs  # here: a process given its folder never loads it

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
