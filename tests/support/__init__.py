"""Helpers shared by tests and benchmarks (benchmarks may import them; the product never does)."""
