"""Terminal output shared by the commands: progress lines, final results and errors.

Everything here prints with rich markup, so text that came from a person or a peer
(names, reasons, values, error messages) is escaped: ``[red]x`` prints as written.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from caroni.protocol import pb

console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

_STATE_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "stalled": "yellow",
    "running": "cyan",
}


class ProgressPrinter:
    """Prints one line for each step whose state, attempt or agent changed."""

    def __init__(self, workflow_label: str) -> None:
        self.label = workflow_label
        self._seen: dict[str, tuple[str, int, str]] = {}
        self._state = ""

    def __call__(self, status: pb.WorkFlowStatus) -> None:
        for step in status.steps:
            key = (step.state, step.attempts, step.agent)
            if self._seen.get(step.step_name) == key:
                continue
            self._seen[step.step_name] = key
            where = f" on {escape(step.agent)}" if step.agent else ""
            attempt = f" (attempt {step.attempts})" if step.attempts > 1 else ""
            reason = f": {escape(step.reason)}" if step.reason and step.state == "failed" else ""
            style = _STATE_STYLE.get(step.state, "white")
            console.print(
                f"  {escape(step.step_name)} {escape(f'[{step.job_type_name}]')}"
                f" [{style}]{escape(step.state)}[/]{where}{attempt}{reason}"
            )
        if status.state != self._state:
            self._state = status.state
            style = _STATE_STYLE.get(status.state, "white")
            why = f": {escape(status.reason)}" if status.reason else ""
            console.print(f"workflow {escape(self.label)} [{style}]{escape(status.state)}[/]{why}")


def print_outputs(status: pb.WorkFlowStatus) -> None:
    for item in status.outputs:
        console.print(f"{escape(item.key)}: {escape(item.value)}")


def print_error(message: str) -> None:
    """``error: message`` on standard error, the message printed as written."""
    errors.print(f"[red]error:[/] {escape(message)}")
