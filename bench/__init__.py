"""Benchmarks of memvisor against its peers: ``python -m bench`` (see bench/cli.py)."""
