"""Pictures drawn on the server as SVG text: a workflow's DAG and a message sequence.

Both are pure functions of plain data, so they are tested without a browser and
the pages need no JavaScript library. Every piece of text is XML-escaped here;
the result is safe to embed in a page as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from caroni.manager.model import Workflow
from caroni.manager.templates import Template
from caroni.protocol import FULFILLMENT_KEY
from caroni.store.traffic import LoggedMessage
from caroni.web.states import colors
from caroni.web.values import clip_plain

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
MONO = "ui-monospace, 'DejaVu Sans Mono', Menlo, monospace"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ============================================================================ the DAG


@dataclass
class DagNode:
    id: str
    kind: str  # "input", "step" or "output"
    label: str
    detail: str = ""  # job type, or the value of an input/output
    state: str | None = None  # colours the node; None: neutral
    href: str = ""
    layer: int = 0


@dataclass(frozen=True)
class DagEdge:
    source: str
    target: str
    title: str
    state: str | None = None  # a dataflow's state: awaiting, available, delivered


@dataclass
class Dag:
    nodes: dict[str, DagNode] = field(default_factory=dict)
    edges: list[DagEdge] = field(default_factory=list)


def _source_node(source: str) -> str:
    """The node a dataflow source comes from: ``step1/out`` -> step1, else the input."""
    step, sep, _ = source.partition("/")
    return f"step:{step}" if sep else f"input:{source}"


def workflow_dag(workflow: Workflow) -> Dag:
    """Inputs, steps (coloured by state) and outputs, joined by their dataflows."""
    dag = Dag()
    for name, given in workflow.inputs.items():
        dag.nodes[f"input:{name}"] = DagNode(f"input:{name}", "input", name, given)
    for step in workflow.steps.values():
        where = f" @ {step.agent}" if step.agent else ""
        dag.nodes[f"step:{step.name}"] = DagNode(
            f"step:{step.name}",
            "step",
            step.name,
            step.job_type + where,
            str(step.state),
            href=f"#step-{step.name}",
        )
    for name in workflow.output_names:
        value = workflow.outputs.get(name)
        dag.nodes[f"output:{name}"] = DagNode(
            f"output:{name}",
            "output",
            name,
            value if value is not None else "",
            "completed" if value is not None else None,
        )
    for flow in workflow.dataflows:
        source = _source_node(flow.source)
        if source not in dag.nodes:
            # A workflow input that was never given (a refused workflow).
            name = flow.source
            dag.nodes[source] = DagNode(source, "input", name, "(not given)")
        target = (
            f"output:{flow.target_name}" if flow.target_step is None else f"step:{flow.target_step}"
        )
        if target not in dag.nodes:
            continue
        title = f"{flow.source} → {flow.target}: {flow.state}"
        if flow.value is not None:
            title += f" ({_clip(flow.value, 80)})"
        dag.edges.append(DagEdge(source, target, title, flow.state))
    return dag


def template_dag(template: Template) -> Dag:
    """The same picture for a template: no states, no values."""
    dag = Dag()
    for name in template.inputs:
        dag.nodes[f"input:{name}"] = DagNode(f"input:{name}", "input", name)
    for step in template.steps.values():
        dag.nodes[f"step:{step.name}"] = DagNode(
            f"step:{step.name}", "step", step.name, step.job_type
        )
    for name in template.outputs:
        dag.nodes[f"output:{name}"] = DagNode(f"output:{name}", "output", name)
    for step in template.steps.values():
        for input_name, source in step.inputs.items():
            origin = _source_node(str(source))
            if origin in dag.nodes:
                dag.edges.append(
                    DagEdge(origin, f"step:{step.name}", f"{source} → {step.name}/{input_name}")
                )
    for name, source in template.outputs.items():
        origin = _source_node(str(source))
        if origin in dag.nodes:
            dag.edges.append(DagEdge(origin, f"output:{name}", f"{source} → output {name}"))
    return dag


def assign_layers(dag: Dag) -> list[list[DagNode]]:
    """Columns left to right: inputs, then each step one right of its furthest source,
    then the outputs. Within a column, nodes are ordered by the mean position of what
    feeds them (one barycentre pass), which untangles the usual fan-out/fan-in shapes.
    """
    upstream: dict[str, list[str]] = {node_id: [] for node_id in dag.nodes}
    for edge in dag.edges:
        upstream[edge.target].append(edge.source)

    depth: dict[str, int] = {}

    def layer_of(node_id: str, visiting: frozenset[str] = frozenset()) -> int:
        if node_id in depth:
            return depth[node_id]
        node = dag.nodes[node_id]
        if node.kind == "input":
            value = 0
        else:
            sources = [s for s in upstream[node_id] if s not in visiting]  # cycle-safe
            value = 1 + max(
                (layer_of(s, visiting | {node_id}) for s in sources),
                default=0,
            )
        depth[node_id] = value
        return value

    for node_id in dag.nodes:
        layer_of(node_id)
    last_step = max((depth[n.id] for n in dag.nodes.values() if n.kind == "step"), default=0)
    for node in dag.nodes.values():
        node.layer = last_step + 1 if node.kind == "output" else depth[node.id]

    count = max((n.layer for n in dag.nodes.values()), default=-1) + 1
    layers: list[list[DagNode]] = [[] for _ in range(count)]
    for node in dag.nodes.values():  # insertion order = document order
        layers[node.layer].append(node)
    position: dict[str, float] = {}
    for column in layers:
        keyed = []
        for index, node in enumerate(column):
            placed = [position[s] for s in upstream[node.id] if s in position]
            keyed.append((sum(placed) / len(placed) if placed else float(index), index, node))
        keyed.sort(key=lambda item: (item[0], item[1]))
        column[:] = [node for _, _, node in keyed]
        for index, node in enumerate(column):
            position[node.id] = float(index)
    return [column for column in layers if column]


_STEP_W, _STEP_H = 190, 62
_PILL_W, _PILL_H = 160, 40
_COL_GAP, _ROW_GAP, _MARGIN = 70, 22, 16


def render_dag(dag: Dag, title: str) -> str:
    """The DAG as an SVG element (left to right)."""
    layers = assign_layers(dag)
    if not layers:
        return ""
    sizes = {
        n.id: (_STEP_W, _STEP_H) if n.kind == "step" else (_PILL_W, _PILL_H)
        for n in dag.nodes.values()
    }
    heights = [
        sum(sizes[n.id][1] for n in column) + _ROW_GAP * (len(column) - 1) for column in layers
    ]
    total_h = max(heights) + 2 * _MARGIN
    boxes: dict[str, tuple[float, float, float, float]] = {}
    x = float(_MARGIN)
    for column, height in zip(layers, heights, strict=True):
        width = max(sizes[n.id][0] for n in column)
        y = (total_h - height) / 2
        for node in column:
            w, h = sizes[node.id]
            boxes[node.id] = (x + (width - w) / 2, y, w, h)
            y += h + _ROW_GAP
        x += width + _COL_GAP
    total_w = x - _COL_GAP + _MARGIN

    out = [
        # "group", not "img": the steps inside are links to their attempts.
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="group" '
        f'aria-label="{_e(title)}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" '
        f'width="{total_w:.0f}" height="{total_h:.0f}" font-family="{FONT}">',
        f"<title>{_e(title)}</title>",
        "<defs>",
    ]
    for name, color in _EDGE_COLORS.items():
        out.append(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>'
        )
    out.append("</defs>")
    for edge in dag.edges:
        sx, sy, sw, sh = boxes[edge.source]
        tx, ty, _, th = boxes[edge.target]
        x1, y1 = sx + sw, sy + sh / 2
        x2, y2 = tx - 2, ty + th / 2
        bend = max((x2 - x1) / 2, 30)
        kind = edge.state if edge.state in _EDGE_COLORS else "plain"
        dash = ' stroke-dasharray="5 4"' if edge.state == "awaiting" else ""
        out.append(
            f'<path class="edge edge-{kind}" d="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} '
            f'{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" fill="none" '
            f'stroke="{_EDGE_COLORS[kind]}" stroke-width="2"{dash} '
            f'marker-end="url(#arrow-{kind})"><title>{_e(edge.title)}</title></path>'
        )
    for node in dag.nodes.values():
        out.append(_dag_node(node, boxes[node.id]))
    out.append("</svg>")
    return "\n".join(out)


_EDGE_COLORS = {
    "plain": "#475569",
    "awaiting": "#9ca3af",
    "available": "#1d4ed8",
    "delivered": "#15803d",
}


def _dag_node(node: DagNode, box: tuple[float, float, float, float]) -> str:
    x, y, w, h = box
    bg, fg = colors(node.state)
    cx = x + w / 2
    radius = h / 2 if node.kind != "step" else 8
    border = "#334155" if node.state is None else bg
    what = {"input": "workflow input", "output": "workflow output", "step": "step"}[node.kind]
    hover = f"{what} {node.label}"
    if node.detail:
        hover += f": {clip_plain(node.detail)}"
    if node.state:
        hover += f" ({node.state})"
    state_attr = f' data-state="{_e(node.state)}"' if node.state else ""
    parts = [
        f'<g class="node node-{node.kind}" data-node="{_e(node.id)}"{state_attr}>',
        f"<title>{_e(hover)}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="{radius:.0f}" '
        f'fill="{bg}" stroke="{border}" stroke-width="1.5"/>',
    ]
    if node.kind == "step":
        lines = [
            ('font-weight="600" font-size="14"', _clip(node.label, 24)),
            ('font-size="12"', _clip(node.detail, 28)),
            ('font-size="11" font-style="italic"', node.state or ""),
        ]
        shown = [(attrs, text) for attrs, text in lines if text]
        top = y + h / 2 - 8 * (len(shown) - 1) + 4  # the lines centred in the box
        for index, (attrs, text) in enumerate(shown):
            parts.append(
                f'<text x="{cx:.1f}" y="{top + index * 16:.1f}" text-anchor="middle" '
                f'fill="{fg}" {attrs}>{_e(text)}</text>'
            )
    else:
        label = _clip(node.label, 22)
        if node.detail:
            parts.append(
                f'<text x="{cx:.1f}" y="{y + 16:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="12" font-weight="600">{_e(label)}</text>'
            )
            parts.append(
                f'<text x="{cx:.1f}" y="{y + 31:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="11" font-family="{MONO}">{_e(_clip(node.detail, 22))}</text>'
            )
        else:
            parts.append(
                f'<text x="{cx:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="12" font-weight="600">{_e(label)}</text>'
            )
    body = "\n".join(parts) + "\n</g>"
    if node.href:
        return f'<a href="{_e(node.href)}" aria-label="{_e(hover)}">{body}</a>'
    return body


# ============================================================================ sequence

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
    broadcast = [p for p in peers if p == FULFILLMENT_KEY]
    others = [p for p in peers if p not in clients and p not in broadcast]
    lanes = [Lane(p, "client", _short_key(p)) for p in clients]
    lanes.append(Lane(own_key, own_label, _short_key(own_key)))
    lanes += [Lane(p, "all agents", "broadcast") for p in broadcast]
    for peer in others:
        role = "manager" if peer.startswith("wf.manager.") else "agent"
        lanes.append(Lane(peer, names.get(peer, role), _short_key(peer)))
    return lanes


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
        f'aria-label="{_e(title)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" font-family="{FONT}">',
        f"<title>{_e(title)}</title>",
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
            f'<g class="lane" data-lane="{_e(lane.key)}"><title>{_e(lane.key)}</title>'
            f'<rect x="{cx - lane_w / 2 + 8:.1f}" y="4" width="{lane_w - 16}" '
            f'height="{_HEAD_H - 14}" rx="6" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{cx:.1f}" y="22" text-anchor="middle" font-size="13" font-weight="600" '
            f'fill="{text}">{_e(_clip(lane.label, 24))}</text>'
            f'<text x="{cx:.1f}" y="36" text-anchor="middle" font-size="10" '
            f'font-family="{MONO}" fill="{text}">{_e(_clip(lane.sublabel, 28))}</text>'
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
            f'<g class="message message-{kind}" data-type="{_e(message.type_name)}">'
            f"<title>{_e(clip_plain(hover, 1500))}</title>"
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
            f'stroke-linejoin="round">{_e(_clip(label, room))}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)
