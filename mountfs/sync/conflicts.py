"""Names for the copies that keep both sides of a conflict.

`report.pdf` edited on two devices ends as `report.pdf` (the first commit the backend took)
and `report (conflicted copy from laptop 2026-11-24).pdf` (the other). The extension stays
last so the copy still opens with the same program; a second clash on the same day counts
up: `report (conflicted copy from laptop 2026-11-24 2).pdf`. Names stay within 255 bytes by
shortening the stem, never the marker or the extension.
"""

from __future__ import annotations

NAME_MAX = 255


def _split(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or dot == len(name) - 1:  # ".bashrc", "name." and "name" have no extension
        return name, ""
    return name[:dot], name[dot:]


def conflicted_name(name: str, device: str, day: str, n: int = 1) -> str:
    """The name of the `n`-th conflicted copy of `name` made by `device` on `day`."""
    stem, ext = _split(name)
    marker = f" (conflicted copy from {device} {day}{'' if n == 1 else f' {n}'})"
    budget = NAME_MAX - len(marker.encode()) - len(ext.encode())
    encoded = stem.encode()[: max(budget, 1)]
    stem = encoded.decode(errors="ignore")
    return f"{stem}{marker}{ext}"
