"""Benchmarks about the library, behind `python -m cxr bench`: `throughput` (images/s, FLOP/s, latency per preset),
`speedrun` (time to accuracy), `baseline` (the plain recipe as a reference) and `measure` (timing helpers)."""
