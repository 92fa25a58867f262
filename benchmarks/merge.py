"""Combine the ``--json`` files of several runs into one report.

``python -m benchmarks.merge A.json B.json ... [--out FILE]``: a configuration
measured in several files is taken from the last one; so are the floors. Useful
when the long configurations run separately from the short ones (the ratios and
targets then need rows from both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.floor import Floor
from benchmarks.report import RunResult, markdown_report, print_report


def load(path: Path) -> tuple[dict[str, Any], list[RunResult], dict[str, Floor]]:
    data = json.loads(path.read_text())
    results = [RunResult(**item) for item in data["results"]]
    floors = {name: Floor(**item) for name, item in data["floors"].items()}
    return data, results, floors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    by_key: dict[tuple[str, str, str, int], RunResult] = {}
    floors: dict[str, Floor] = {}
    header = []
    for path in args.files:
        data, results, file_floors = load(path)
        floors.update(file_floors)
        for result in results:
            by_key.pop(result.key, None)  # keep the order of the latest file
            by_key[result.key] = result
        header.append(
            f"- `{data.get('command', '?')}`"
            + (" (partial)" if data.get("partial") else "")
            + f": caroni from {data.get('caroni', '?')}"
        )
    results = sorted(by_key.values(), key=lambda r: (r.size, r.workload, r.system, r.mode))
    Console(width=220).print(*header)
    print_report(Console(width=220), results, floors)
    if args.out:
        facts = json.loads(args.files[-1].read_text()).get("machine", {})
        machine = ", ".join(f"{k}: {v}" for k, v in facts.items())
        args.out.write_text(
            "\n".join(["Runs merged:", "", *header, "", f"Machine: {machine}.", ""])
            + "\n"
            + markdown_report(results, floors)
        )


if __name__ == "__main__":
    main()
