"""Caroni's benchmark harness (not part of the installed package).

Run it with ``python -m benchmarks.run`` from the repository root; see README.md here.
"""
