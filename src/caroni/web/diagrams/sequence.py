"""A workflow's messages between its nodes, drawn as an SVG sequence diagram."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caroni.protocol import FULFILLMENT_KEY
from caroni.store.traffic import LoggedMessage
from caroni.web.diagrams.svg import FONT, MONO, clipped, xml
from caroni.web.values import clip_plain

MAX_MESSAGES = 400  # messages a sequence diagram shows: beyond this it is unreadable anyway


@dataclass(frozen=True)
class Lane:
    key: str
    label: str
    sublabel: str


_KIND_COLORS = {
    "create": "#6d28d9",
    "negotiate": "#475569",
    "status": "#1d4ed8",
    "data": "#15803d",
    "stop": "#b91c1c",
}


def _kind(type_name: str) -> str:
    if type_name in ("WorkFlowCreate",):
        return "create"
    if type_name in ("JobDataAvailable", "JobDataReady"):
        return "data"
    if type_name in ("JobKill", "WorkFlowCancel"):
        return "stop"
    if "Status" in type_name or type_name == "JobQueued":
        return "status"
    return "negotiate"


def message_detail(type_name: str, summary: str) -> str:
    """The few words worth reading on the arrow (the full message is in its tooltip)."""
    try:
        data: Any = json.loads(summary) if summary else {}
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    if type_name == "JobFulfillmentRequest":
        return str(data.get("jobTypeName", ""))
    if type_name == "JobFulfillmentDecline":
        return str(data.get("declineMessage", ""))
    if type_name == "JobStatusUpdate":
        status = str(data.get("jobStatus", "")).removeprefix("JOB_STATUS_").lower()
        return status
    if type_name in ("JobDataAvailable", "JobDataReady"):
        pairs = data.get("parameters") or []
        return ", ".join(
            f"{p.get('key', '')}={p.get('value', '')}" for p in pairs if isinstance(p, dict)
        )
    if type_name == "WorkFlowStatus":
        return str(data.get("state", ""))
    if type_name == "WorkFlowCreate":
        return str(data.get("templateName", ""))
    if type_name in ("JobKill",):
        return str(data.get("killInfo", ""))
    return ""


def site_names(messages: Iterable[LoggedMessage]) -> dict[str, str]:
    """Agent site names announced in offers and declines, by the agent's key."""
    names: dict[str, str] = {}
    for message in messages:
        if message.direction != "in" or '"siteIdentifier"' not in message.summary:
            continue
        try:
            site = json.loads(message.summary).get("site") or {}
        except (ValueError, AttributeError):
            continue
        if isinstance(site, dict) and site.get("siteIdentifier"):
            names.setdefault(message.peer, str(site["siteIdentifier"]))
    return names


def _short_key(key: str) -> str:
    head, _, tail = key.rpartition(".")
    return f"{head}.{tail[:8]}…" if head and len(tail) > 10 else key


def sequence_lanes(
    messages: Sequence[LoggedMessage],
    own_key: str,
    own_label: str,
    names: Mapping[str, str],
) -> list[Lane]:
    """Clients, this node, the broadcast, then every other peer as it first appears."""
    peers: list[str] = []
    for message in messages:
        if message.peer and message.peer != own_key and message.peer not in peers:
            peers.append(message.peer)
    clients = [p for p in peers if p.startswith("wf.client.")]
    broadcast = [p for p in peers if p == FULFILLMENT_KEY or p.startswith(_TYPED)]
    others = [p for p in peers if p not in clients and p not in broadcast]
    lanes = [Lane(p, "client", _short_key(p)) for p in clients]
    lanes.append(Lane(own_key, own_label, _short_key(own_key)))
    lanes += [_broadcast_lane(p) for p in broadcast]
    for peer in others:
        role = "manager" if peer.startswith("wf.manager.") else "agent"
        lanes.append(Lane(peer, names.get(peer, role), _short_key(peer)))
    return lanes


_TYPED = FULFILLMENT_KEY + "."  # requests to the agents of one job type


def _broadcast_lane(key: str) -> Lane:
    if key == FULFILLMENT_KEY:
        return Lane(key, "all agents", "broadcast")
    job_type = urllib.parse.unquote(key.removeprefix(_TYPED))
    return Lane(key, f"agents of {job_type}", "broadcast")


_LANE_W, _ROW_H, _HEAD_H, _TIME_W = 190, 30, 54, 78


def render_sequence(
    messages: Sequence[LoggedMessage],
    *,
    own_key: str,
    own_label: str,
    names: Mapping[str, str] | None = None,
    title: str,
) -> str:
    """The messages as a sequence diagram: one lifeline per node, arrows in time order."""
    if not messages:
        return ""
    known = {**site_names(messages), **(names or {})}
    lanes = sequence_lanes(messages, own_key, own_label, known)
    column = {lane.key: index for index, lane in enumerate(lanes)}
    # Few lanes get wider ones, so the labels between them have room.
    lane_w = max(_LANE_W, min(340, 1000 // len(lanes)))
    width = _TIME_W + lane_w * len(lanes) + 10
    height = _HEAD_H + 16 + _ROW_H * len(messages) + 12

    def lane_x(key: str) -> float:
        return _TIME_W + lane_w * column[key] + lane_w / 2

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" role="img" '
        f'aria-label="{xml(title)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="{FONT}">',
        f"<title>{xml(title)}</title>",
        "<defs>",
    ]
    for name, color in _KIND_COLORS.items():
        out.append(
            f'<marker id="seq-{name}" viewBox="0 0 10 10" refX="10" refY="5" '
            f'markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    out.append(f'<text x="6" y="{_HEAD_H - 8}" font-size="11" fill="#475569">time</text>')
    for lane in lanes:
        cx = lane_x(lane.key)
        is_own = lane.key == own_key
        fill, stroke = ("#1e293b", "#1e293b") if is_own else ("#f1f5f9", "#94a3b8")
        text = "#ffffff" if is_own else "#0f172a"
        out.append(
            f'<g class="lane" data-lane="{xml(lane.key)}"><title>{xml(lane.key)}</title>'
            f'<rect x="{cx - lane_w / 2 + 8:.1f}" y="4" width="{lane_w - 16}" '
            f'height="{_HEAD_H - 14}" rx="6" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{cx:.1f}" y="22" text-anchor="middle" font-size="13" font-weight="600" '
            f'fill="{text}">{xml(clipped(lane.label, 24))}</text>'
            f'<text x="{cx:.1f}" y="36" text-anchor="middle" font-size="10" '
            f'font-family="{MONO}" fill="{text}">{xml(clipped(lane.sublabel, 28))}</text>'
            f'<line x1="{cx:.1f}" y1="{_HEAD_H - 10}" x2="{cx:.1f}" y2="{height - 4}" '
            f'stroke="#cbd5e1" stroke-dasharray="4 4"/></g>'
        )
    start = messages[0].at
    for index, message in enumerate(messages):
        y = _HEAD_H + 16 + _ROW_H * index + 12
        peer = message.peer if message.peer in column else own_key
        x_own, x_peer = lane_x(own_key), lane_x(peer)
        x1, x2 = (x_peer, x_own) if message.direction == "in" else (x_own, x_peer)
        kind = _kind(message.type_name)
        color = _KIND_COLORS[kind]
        detail = message_detail(message.type_name, message.summary)
        label = message.type_name + (f": {detail}" if detail else "")
        hover = f"{message.direction} {message.type_name} {message.peer}\n{message.summary}"
        mid = (x1 + x2) / 2
        out.append(
            f'<g class="message message-{kind}" data-type="{xml(message.type_name)}">'
            f"<title>{xml(clip_plain(hover, 1500))}</title>"
            f'<text x="6" y="{y + 4:.1f}" font-size="10" font-family="{MONO}" '
            f'fill="#64748b">+{message.at - start:.3f}s</text>'
        )
        if x1 == x2:  # a message to itself (should not happen; draw a small loop)
            out.append(
                f'<path d="M{x1:.1f},{y - 6:.1f} h24 v12 h-22" fill="none" stroke="{color}" '
                f'stroke-width="1.5" marker-end="url(#seq-{kind})"/>'
            )
            mid = x1 + 60
        else:
            direction = 1 if x2 > x1 else -1
            out.append(
                f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2 - direction * 2:.1f}" y2="{y:.1f}" '
                f'stroke="{color}" stroke-width="1.5" marker-end="url(#seq-{kind})"/>'
            )
        room = max(int(abs(x2 - x1) / 6.2), 24)
        out.append(
            # A white halo keeps the label readable where it crosses a lifeline.
            f'<text x="{mid:.1f}" y="{y - 5:.1f}" text-anchor="middle" font-size="11" '
            f'fill="{color}" stroke="#ffffff" stroke-width="3" paint-order="stroke" '
            f'stroke-linejoin="round">{xml(clipped(label, room))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)
