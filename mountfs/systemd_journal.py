"""Logging to the systemd journal, when the journal is what our stderr is connected to.

Under a systemd unit (`mountfs service install`, or a `.mount` unit made from fstab),
stderr is a stream into journald, and systemd says so with `JOURNAL_STREAM=DEV:INODE`;
comparing that with `fstat(2)` tells the journal apart from a stderr redirected elsewhere
(a child that inherited the variable but not the stream). No journald library is needed:
journald reads a `<N>` syslog priority prefix at the start of each line and records the
pid, the unit and the time itself, so the lines carry only level, logger and message.
"""

from __future__ import annotations

import logging
import os

__all__ = ["JournalFormatter", "stderr_is_journal"]

_PRIORITY = {  # syslog priorities: 2 crit, 3 err, 4 warning, 6 info, 7 debug
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def stderr_is_journal() -> bool:
    """True if file descriptor 2 is the journal stream that systemd set up for us."""
    try:
        device, inode = (int(part) for part in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(2)
    except (KeyError, ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JournalFormatter(logging.Formatter):
    """`<priority>LEVEL logger: message`; journald makes an entry of each line, so every
    line of a multi-line record (a traceback) carries the record's priority."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITY.items() if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())
