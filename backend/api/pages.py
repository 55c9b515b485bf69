"""The small HTML pages of public links: one template, escaped values, no scripts.

Every page is self-contained (inline CSS, no external resource, no JavaScript) and is
served with a strict Content-Security-Policy, `Referrer-Policy: no-referrer` (the token is
in the URL: it must not leak to other sites through `Referer`) and `noindex`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.responses import HTMLResponse

__all__ = ["FileRow", "file_page", "folder_page", "message_page", "password_page", "size_text"]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Cache-Control": "private, no-store",
}

_CSS = """
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f5f7fa;
  --card: #ffffff; --line: #e4e7ec; --accent: #2f6fed; --accent-fg: #ffffff; --bad: #b42318; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ec; --muted: #98a2b3;
  --bg: #0f1218; --card: #181c24; --line: #2a303c; --accent: #5b8cff; --bad: #f97066; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
main { max-width: 44rem; margin: 3rem auto; padding: 0 1rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 1.5rem 1.75rem; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
h1 { font-size: 1.25rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
.meta { color: var(--muted); margin: 0 0 1.25rem; }
.button { display: inline-block; background: var(--accent); color: var(--accent-fg);
  border: 0; border-radius: 8px; padding: .6rem 1.1rem; font: inherit; font-weight: 600;
  text-decoration: none; cursor: pointer; }
table { width: 100%; border-collapse: collapse; margin: 0 0 1.25rem; }
td { padding: .45rem 0; border-bottom: 1px solid var(--line); vertical-align: middle; }
td.size { color: var(--muted); text-align: right; white-space: nowrap; padding: 0 1rem; }
td.name { overflow-wrap: anywhere; }
td.act { text-align: right; white-space: nowrap; }
a { color: var(--accent); }
input[type=password] { font: inherit; padding: .55rem .7rem; border: 1px solid var(--line);
  border-radius: 8px; width: 100%; margin: 0 0 .9rem; background: var(--bg); color: var(--fg); }
.error { color: var(--bad); margin: 0 0 .9rem; }
footer { color: var(--muted); font-size: .85rem; margin-top: 1rem; text-align: center; }
"""


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _page(
    title: str, body: str, status: int, headers: dict[str, str] | None = None
) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<meta name=robots content="noindex, nofollow">'
        f"<title>{html.escape(title)} · mountfs</title><style>{_CSS}</style></head>"
        f"<body><main><div class=card>{body}</div>"
        "<footer>Shared with mountfs</footer></main></body></html>"
    )
    return HTMLResponse(document, status, {**SECURITY_HEADERS, **(headers or {})})


def file_page(name: str, size: int, download_href: str) -> HTMLResponse:
    body = (
        f"<h1>{html.escape(name)}</h1><p class=meta>{html.escape(size_text(size))}</p>"
        f'<a class=button id=download href="{html.escape(download_href)}" download>'
        "Download</a>"
    )
    return _page(name, body, 200)


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    size: int
    href: str


def folder_page(name: str, rows: Sequence[FileRow], zip_href: str, truncated: bool) -> HTMLResponse:
    total = sum(r.size for r in rows)
    items = "".join(
        f"<tr><td class=name>{html.escape(r.path)}</td>"
        f"<td class=size>{html.escape(size_text(r.size))}</td>"
        f'<td class=act><a class=file-download href="{html.escape(r.href)}" download>'
        "Download</a></td></tr>"
        for r in rows
    )
    listing = f"<table>{items}</table>" if rows else "<p class=meta>This folder is empty.</p>"
    more = "<p class=meta>Only the first files are listed.</p>" if truncated else ""
    count = f"{len(rows)} file{'s' if len(rows) != 1 else ''}"
    body = (
        f"<h1>{html.escape(name)}</h1>"
        f"<p class=meta>Folder · {count} · {html.escape(size_text(total))}</p>"
        f"{listing}{more}"
        f'<a class=button id=download-all href="{html.escape(zip_href)}" download>'
        "Download all (.zip)</a>"
    )
    return _page(name, body, 200)


def password_page(error: str | None = None, status: int = 401) -> HTMLResponse:
    problem = f"<p class=error role=alert>{html.escape(error)}</p>" if error else ""
    body = (
        "<h1>This link is protected</h1><p class=meta>Enter the password to open it.</p>"
        f"{problem}<form method=post><input type=password name=password id=password "
        "autocomplete=current-password required autofocus aria-label=Password>"
        "<button class=button type=submit>Open</button></form>"
    )
    return _page("Password required", body, status)


def message_page(
    title: str, text: str, status: int, headers: dict[str, str] | None = None
) -> HTMLResponse:
    body = f"<h1>{html.escape(title)}</h1><p class=meta>{html.escape(text)}</p>"
    return _page(title, body, status, headers)
