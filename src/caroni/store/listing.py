"""What the read modules of both roles share: the page size, and stamps.

A *stamp* is a short string that changes whenever what it is made of changes.
A live page carries the stamp of what it shows, so that a browser polling for
news costs one small query when nothing happened. The read modules, which know
which columns change with a row, make the stamps of what they read.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

PAGE_SIZE = 50  # rows of a paged list


def stamp(*parts: Any) -> str:
    text = json.dumps(parts, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
