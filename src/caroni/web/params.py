"""The bounds of what pages and the API take: paging, search, names and text.

Anything that reaches a query is checked here first, so a bad value is a 4xx
that says what is wrong, never a database error: SQLite and PostgreSQL refuse
integers past 64 bits, and PostgreSQL refuses NUL characters in text.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

MAX_OFFSET = 10**9
MAX_SEARCH = 200  # characters: more than any id, name or template anyone types
MAX_NAME = 200  # characters of a template or job type name in a URL


def no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


Offset = Annotated[
    int, Query(ge=0, le=MAX_OFFSET, description="how many rows to skip (newest first)")
]
Search = Annotated[
    str,
    Query(max_length=MAX_SEARCH, description="id prefix, or part of a name"),
    AfterValidator(no_nul),
]
Text = Annotated[str, AfterValidator(no_nul)]  # text in a request body
Filter = Annotated[str, Query(max_length=MAX_SEARCH), AfterValidator(no_nul)]
Name = Annotated[str, Path(max_length=MAX_NAME), AfterValidator(no_nul)]
