"""The `mountfs` command line: parses arguments, then calls into the layers that do the work.

`core` holds the `main` group and the first commands (server, account, login, devices,
mount, umount, status, sync, service); each later feature registers its commands in a
module of its own, imported here for its side effect of adding them to `main`.
"""

from mountfs.cli import (
    admin,  # noqa: F401  (registers `mountfs admin`)
    events,  # noqa: F401  (registers `mountfs events`)
    link,  # noqa: F401  (registers `mountfs link`)
    pin,  # noqa: F401  (registers `mountfs pin` and `mountfs unpin`)
    share,  # noqa: F401  (registers `mountfs share`, `unshare`, `shares`, `account delete`)
    storage_admin,  # noqa: F401  (registers `mountfs admin gc`, `scrub`, `stats`)
    transfers,  # noqa: F401  (registers `mountfs pause`, `resume`, `cancel`, `cp`)
    versions,  # noqa: F401  (registers `mountfs versions`, `restore`, `trash`, `du`)
)
from mountfs.cli.core import main

__all__ = ["main"]
