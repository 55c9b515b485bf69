"""The `mountfs` command line: parses arguments, then calls into the layers that do the work.

`core` holds the `main` group and the first commands (server, account, login, devices,
mount, umount, status, sync, service); each later feature registers its commands in a
module of its own, imported here for its side effect of adding them to `main`.
"""

from mountfs.cli.core import main

__all__ = ["main"]
