"""How pages show times, durations, ids and URL parts (the templates' filters)."""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse

from markupsafe import Markup


def when(ts: float | None) -> Markup:
    """A timestamp as local time, machine-readable in ``datetime``."""
    if ts is None:
        return Markup("—")
    moment = dt.datetime.fromtimestamp(ts).astimezone()
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        moment.isoformat(timespec="seconds"),
        moment.strftime("%Y-%m-%d %H:%M:%S %Z"),
        moment.strftime("%Y-%m-%d %H:%M:%S"),
    )


def since(ts: float | None) -> str:
    if ts is None:
        return ""
    return duration(max(time.time() - ts, 0.0))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def short(uuid_hex: str | None) -> str:
    return (uuid_hex or "")[:8]


def urlpart(text: str) -> str:
    return urllib.parse.quote(text, safe="")
