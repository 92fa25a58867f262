"""A workflow's or a template's steps as a layered graph, drawn as SVG."""

from __future__ import annotations

from dataclasses import dataclass, field

from caroni.manager.model import Workflow
from caroni.manager.templates import Template
from caroni.web.diagrams.svg import FONT, MONO, clipped, xml
from caroni.web.states import colors
from caroni.web.values import clip_plain


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
            title += f" ({clipped(flow.value, 80)})"
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
        f'aria-label="{xml(title)}" viewBox="0 0 {total_w:.0f} {total_h:.0f}" '
        f'width="{total_w:.0f}" height="{total_h:.0f}" font-family="{FONT}">',
        f"<title>{xml(title)}</title>",
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
            f'marker-end="url(#arrow-{kind})"><title>{xml(edge.title)}</title></path>'
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
    state_attr = f' data-state="{xml(node.state)}"' if node.state else ""
    parts = [
        f'<g class="node node-{node.kind}" data-node="{xml(node.id)}"{state_attr}>',
        f"<title>{xml(hover)}</title>",
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="{radius:.0f}" '
        f'fill="{bg}" stroke="{border}" stroke-width="1.5"/>',
    ]
    if node.kind == "step":
        lines = [
            ('font-weight="600" font-size="14"', clipped(node.label, 24)),
            ('font-size="12"', clipped(node.detail, 28)),
            ('font-size="11" font-style="italic"', node.state or ""),
        ]
        shown = [(attrs, text) for attrs, text in lines if text]
        top = y + h / 2 - 8 * (len(shown) - 1) + 4  # the lines centred in the box
        for index, (attrs, text) in enumerate(shown):
            parts.append(
                f'<text x="{cx:.1f}" y="{top + index * 16:.1f}" text-anchor="middle" '
                f'fill="{fg}" {attrs}>{xml(text)}</text>'
            )
    else:
        label = clipped(node.label, 22)
        if node.detail:
            parts.append(
                f'<text x="{cx:.1f}" y="{y + 16:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="12" font-weight="600">{xml(label)}</text>'
            )
            parts.append(
                f'<text x="{cx:.1f}" y="{y + 31:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="11" font-family="{MONO}">{xml(clipped(node.detail, 22))}</text>'
            )
        else:
            parts.append(
                f'<text x="{cx:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" fill="{fg}" '
                f'font-size="12" font-weight="600">{xml(label)}</text>'
            )
    body = "\n".join(parts) + "\n</g>"
    if node.href:
        return f'<a href="{xml(node.href)}" aria-label="{xml(hover)}">{body}</a>'
    return body
