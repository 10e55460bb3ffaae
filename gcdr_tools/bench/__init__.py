"""Benchmarks (`make bench`): speed and memory of each stage, measured outside the test suite."""
