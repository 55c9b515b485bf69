"""`python -m backend --data DIR [...]`: run the backend (see `backend.server`)."""

from __future__ import annotations

import sys

from backend.server import parse_args, serve


def main() -> None:
    serve(parse_args(sys.argv[1:]))


if __name__ == "__main__":
    main()
