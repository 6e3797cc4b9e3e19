"""The benchmarks, each run from the repo root as `python -m bench.NAME`; bench.harness holds what they share."""
