"""One palette for every state shown on either site (badges, DAG nodes, tables).

Pages get it as CSS classes (``/states.css``, generated from this table) and the
SVG pictures as fill colours, so a state looks the same wherever it appears.
Text colours are chosen for at least 4.5:1 contrast on their background.
"""

from __future__ import annotations

# state -> (background, text)
_GREY = ("#e5e7eb", "#1f2937")
_LIGHT_BLUE = ("#dbeafe", "#1e3a8a")
_BLUE = ("#1d4ed8", "#ffffff")
_GREEN = ("#15803d", "#ffffff")
_RED = ("#b91c1c", "#ffffff")
_AMBER = ("#fde68a", "#78350f")
_DARK_GREY = ("#4b5563", "#ffffff")

PALETTE: dict[str, tuple[str, str]] = {
    # workflows
    "created": _GREY,
    "running": _BLUE,
    "stalled": _AMBER,
    "completed": _GREEN,
    "failed": _RED,
    "cancelled": _DARK_GREY,
    # steps
    "waiting": _GREY,
    "placed": _LIGHT_BLUE,
    # attempts
    "requesting": _GREY,
    "accepting": _AMBER,
    "pending": _LIGHT_BLUE,
    "queued": _LIGHT_BLUE,
    "abandoned": _DARK_GREY,
    # dataflows
    "awaiting": _GREY,
    "available": _LIGHT_BLUE,
    "delivered": _GREEN,
}

NEUTRAL = ("#f8fafc", "#0f172a")  # a template's step: no state yet


def colors(state: str | None) -> tuple[str, str]:
    if state is None:
        return NEUTRAL
    return PALETTE.get(state, _GREY)


def states_css() -> str:
    """``.state-<name>`` rules for every state, from the one palette."""
    rules = [
        f".state-{name}{{background:{bg};color:{fg};border-color:{bg}}}"
        for name, (bg, fg) in PALETTE.items()
    ]
    return "\n".join(rules) + "\n"
