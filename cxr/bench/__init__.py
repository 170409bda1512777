"""Benchmarks about the library, behind `python -m cxr bench`: `throughput` (images/s and FLOP/s per preset against
the plain recipe), `compute` (the matmul peak, FLOPs, compute-only steps and latency per image), `speedrun` (time to
accuracy), `baseline` (the plain recipe as a reference) and `measure` (timing helpers)."""
