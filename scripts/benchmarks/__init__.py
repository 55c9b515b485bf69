"""The benchmarks of mountfs, each beside its comparison; `scripts/bench` runs them.

`cli` parses the command line and picks suites; `harness` turns recorded runs into
tables of medians and ratios and into JSON; each other module is one suite: `fs`
(filesystem targets from `targets`), `backend_meta` (the backend's metadata throughput)
and `chunks` (the client's chunk pipeline). See docs/benchmarks.md.
"""
