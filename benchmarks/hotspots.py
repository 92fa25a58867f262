"""Summarise py-spy profiles (``--format raw`` collapsed stacks, as ``--profile`` writes).

``python -m benchmarks.hotspots FILE... [--top 25]`` prints, per file, the share
of samples by thread, the functions where the samples land (self time) and the
functions on the stack (total time, their callees included), each as a percentage
of all the samples of the process. ``--under FUNCTION`` (repeatable) shows instead
where the time inside that function goes (its direct callees).

py-spy leaves out threads it sees idle, but a thread waiting for a database answer
inside psycopg's wait loop counts as busy: the percentages are shares of the
time the process's threads were not idle, round trips included, not of CPU time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
_TRIM = re.compile(r"^.*?/(site-packages|dist-packages|src|lib/python3\.\d+)/")


@dataclass
class Profile:
    total: int
    threads: Counter[str]
    self_time: Counter[str]
    total_time: Counter[str]
    modules: Counter[str]


def function_of(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = _TRIM.sub("", match["path"])
    return f"{match['name']} ({path})"


def module_of(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = _TRIM.sub("", match["path"])
    parts = path.split("/")
    # A package and its first sub-package, e.g. "sqlalchemy/engine", "caroni/node".
    return "/".join(parts[:2]) if len(parts) > 2 else path


def read(path: Path) -> Profile:
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    total = 0
    for raw in path.read_text(errors="replace").splitlines():
        match = _LINE.match(raw.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = match["stack"].split(";")
        thread = "?"
        code = []
        for frame in frames:
            if frame.startswith("process "):
                continue
            if frame.startswith("thread "):
                thread = frame
                continue
            code.append(frame)
        total += count
        threads[thread] += count
        if not code:
            continue
        self_time[function_of(code[-1])] += count
        modules[module_of(code[-1])] += count
        for name in {function_of(frame) for frame in code}:
            total_time[name] += count
    return Profile(total, threads, self_time, total_time, modules)


def show(path: Path, top: int) -> str:
    profile = read(path)
    if not profile.total:
        return f"{path}: no samples"

    def pct(count: int) -> str:
        return f"{100 * count / profile.total:5.1f}%"

    lines = [f"== {path.name}: {profile.total} samples", "-- by thread"]
    lines += [f"{pct(c)}  {name}" for name, c in profile.threads.most_common(8)]
    lines.append("-- self time by module (where the samples land)")
    lines += [f"{pct(c)}  {name}" for name, c in profile.modules.most_common(top)]
    lines.append("-- self time by function")
    lines += [f"{pct(c)}  {name}" for name, c in profile.self_time.most_common(top)]
    lines.append("-- total time by function (with callees)")
    lines += [f"{pct(c)}  {name}" for name, c in profile.total_time.most_common(top)]
    return "\n".join(lines)


def children(path: Path, parent: str, top: int) -> str:
    """Where the time inside ``parent`` (a function name, e.g. ``Node._handle_one``)
    goes: its direct callees, as shares of all the process's samples."""
    total = inside = 0
    under: Counter[str] = Counter()
    for raw in path.read_text(errors="replace").splitlines():
        match = _LINE.match(raw.strip())
        if not match:
            continue
        count = int(match["count"])
        total += count
        frames = [
            function_of(f)
            for f in match["stack"].split(";")
            if not f.startswith(("process ", "thread "))
        ]
        for index, frame in enumerate(frames):
            if frame.split(" (")[0] == parent:
                inside += count
                callee = frames[index + 1] if index + 1 < len(frames) else "(itself)"
                under[callee] += count
                break
    if not total:
        return f"{path}: no samples"
    lines = [f"-- inside {parent}: {100 * inside / total:.1f}% of {path.name}"]
    lines += [f"{100 * c / total:5.1f}%  {name}" for name, c in under.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hotspots")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--under", action="append", default=[], help="break down this function's callees"
    )
    args = parser.parse_args(argv)
    for path in args.files:
        if args.under:
            print("\n".join(children(path, name, args.top) for name in args.under))
        else:
            print(show(path, args.top))
        print()


if __name__ == "__main__":
    main()
