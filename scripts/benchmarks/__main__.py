"""`python -m scripts.benchmarks` is `scripts/bench`."""

from .cli import main

raise SystemExit(main())
