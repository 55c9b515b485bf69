"""The trio/SQLite atomicity rule, checked on the source: no await inside a transaction.

Queries run on the trio thread and rely on "no await inside a transaction" for atomicity
(docs/client.md): a `with ... transaction():` block in an `async def` must not contain an
`await` (or `async with`/`async for`), and everything it calls is a plain function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mountfs

PACKAGE = Path(mountfs.__file__).parent


def _opens_transaction(node: ast.With) -> bool:
    for item in node.items:
        call = item.context_expr
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "transaction"
        ):
            return True
    return False


def _violations(tree: ast.AST, path: Path) -> list[str]:
    found: list[str] = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.With) and _opens_transaction(node):
                has_await = any(
                    isinstance(n, ast.Await | ast.AsyncWith | ast.AsyncFor) for n in ast.walk(node)
                )
                if has_await:
                    found.append(f"{path}:{node.lineno} awaits inside a transaction")
    return found


def test_no_await_inside_a_transaction() -> None:
    problems: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += _violations(ast.parse(path.read_text(), str(path)), path)
    assert problems == []
