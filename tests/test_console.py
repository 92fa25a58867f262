"""Terminal output: text from people and peers prints as written, markup and all."""

from __future__ import annotations

import pytest

from caroni.console import ProgressPrinter, print_error, print_outputs
from caroni.protocol import pb

MARKUP = "[red]x[/red] [bold]y"


def test_progress_outputs_and_errors_print_markup_in_their_text_literally(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = pb.WorkFlowStatus(
        state="failed",
        reason=MARKUP,
        outputs=[pb.WorkFlowInput(key=MARKUP, value=MARKUP)],
        steps=[
            pb.StepStatus(
                step_name=MARKUP,
                job_type_name="[green]jt",
                state="failed",
                attempts=2,
                agent=MARKUP,
                reason=MARKUP,
            )
        ],
    )
    ProgressPrinter("[blue]label")(status)
    print_outputs(status)
    print_error(MARKUP)
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"  {MARKUP} [[green]jt] failed on {MARKUP} (attempt 2): {MARKUP}",
        f"workflow [blue]label failed: {MARKUP}",
        f"{MARKUP}: {MARKUP}",
    ]
    assert err == f"error: {MARKUP}\n"
