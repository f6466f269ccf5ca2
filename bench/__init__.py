"""Benchmark of the handler hot path against a naive reference."""
