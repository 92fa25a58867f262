"""`python -m caroni` is the `caroni` command."""

from caroni.cli import main

main()
