"""Client configuration: where a device keeps its state, and the defaults a user can change."""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV = "MOUNTFS_STATE"


def default_state_dir() -> Path:
    """The state directory when `--state` is not given.

    `$MOUNTFS_STATE` wins, then `$XDG_DATA_HOME/mountfs`, then `~/.local/share/mountfs`,
    following the XDG base directory convention that desktop sync clients use.
    """
    if env := os.environ.get(STATE_ENV):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mountfs"
