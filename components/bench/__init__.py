"""Benchmarks behind `omnistage bench ...`; results are recorded in benchmarks/README.md."""
