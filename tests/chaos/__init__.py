"""Chaos testing: real processes killed, a real broker restarted, nothing lost or stuck.

``python -m tests.chaos.chaos`` runs the full harness; ``test_chaos.py`` runs a
smaller version of the same code in CI.
"""
