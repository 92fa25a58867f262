"""What both pictures share: fonts, and XML-escaped, clipped text."""

from __future__ import annotations

from html import escape

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MONO = "ui-monospace, 'DejaVu Sans Mono', Menlo, monospace"


def xml(text: object) -> str:
    return escape(str(text), quote=True)


def clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
