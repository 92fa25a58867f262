"""The login throttle: how many password checks one client may ask for one user name.

Kept in memory, per site: a restart forgets it, which only gives a guesser a few
more tries per restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Key = tuple[str, str]  # (user name, client address)


class LoginThrottle:
    """At most ``allowed`` login attempts for one user name from one client address
    within ``window`` seconds; further attempts are refused until the oldest one
    leaves the window.

    An attempt counts when it starts, before the password is checked: the check is
    slow on purpose, and counting failures only once a check ended let guesses sent
    all at once be checked all. Keying by address too means a guesser locks out only
    themselves, not the user they guess at.
    """

    def __init__(
        self,
        allowed: int = 5,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self.window = window
        self._clock = clock
        self._attempts: dict[Key, list[float]] = {}
        self._sweep_at = 1024  # tidy the whole table when it grows past this

    def attempt(self, username: str, address: str) -> float:
        """Count an attempt and return 0.0, or the seconds until one is allowed again
        (a refused attempt is not counted)."""
        now = self._clock()
        key = (username, address)
        recent = [t for t in self._attempts.get(key, []) if now - t < self.window]
        if len(recent) >= self.allowed:
            self._attempts[key] = recent
            return max(self.window - (now - recent[0]), 0.0)
        recent.append(now)
        self._attempts[key] = recent
        if len(self._attempts) > self._sweep_at:
            self._sweep(now)
        return 0.0

    def succeeded(self, username: str, address: str) -> None:
        """The password was right: that user's attempts from that address are forgotten."""
        self._attempts.pop((username, address), None)

    def _sweep(self, now: float) -> None:
        # Guessing many user names must not grow the table without end.
        self._attempts = {
            key: times
            for key, times in self._attempts.items()
            if times and now - times[-1] < self.window
        }
        self._sweep_at = max(1024, 2 * len(self._attempts))
