"""`python -m mountfs` is the `mountfs` command."""

from mountfs.cli import main

main()
