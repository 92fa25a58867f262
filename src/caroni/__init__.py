"""Caroni: federated workflows over a message broker."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("caroni")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "dev"
