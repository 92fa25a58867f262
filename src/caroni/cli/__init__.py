"""The `caroni` command line.

``root`` holds the app and the entry point; ``shared`` the options and helpers the
commands share (``reports_errors`` among them); the commands live by what they work
on: ``demo``, ``nodes`` (manager, agent), ``workflows`` (submit, status, cancel),
``keys``, ``trust`` and ``users``.
"""

from caroni.cli.root import app, main

__all__ = ["app", "main"]
