"""Pictures drawn on the server as SVG text: a workflow's DAG and a message sequence.

Both are pure functions of plain data, so they are tested without a browser and
the pages need no JavaScript library. Every piece of text is XML-escaped here;
the result is safe to embed in a page as is.
"""

from caroni.web.diagrams.dag import (
    assign_layers,
    render_dag,
    template_dag,
    workflow_dag,
)
from caroni.web.diagrams.sequence import (
    MAX_MESSAGES,
    message_detail,
    render_sequence,
    sequence_lanes,
)

__all__ = [
    "MAX_MESSAGES",
    "assign_layers",
    "message_detail",
    "render_dag",
    "render_sequence",
    "sequence_lanes",
    "template_dag",
    "workflow_dag",
]
