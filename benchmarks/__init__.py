"""Benchmark scripts; run them with ``python benchmarks/<name>.py``."""
