"""Where personal state goes by default: the override first, then the platform's convention."""
from __future__ import annotations

import sys

import pytest

from edgekit.paths import default_state_dir


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_STATE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "mine"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG convention is Linux's")
def test_linux_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_STATE_DIR", "")  # empty is unset, not the current folder
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "edgekit"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "share" / "edgekit"

