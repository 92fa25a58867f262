"""One home for waiting longer after each failure in a row."""

from __future__ import annotations


class Backoff:
    """Pauses that double after each failure, from ``first`` up to ``most``."""

    def __init__(self, first: float = 0.1, most: float = 5.0) -> None:
        self.first = first
        self.most = most
        self._next = first

    def next(self) -> float:
        """The pause before the next try; the one after it will be twice as long."""
        pause = self._next
        self._next = min(self._next * 2, self.most)
        return pause

    def reset(self) -> None:
        """A try succeeded: the next failure pauses briefly again."""
        self._next = self.first
