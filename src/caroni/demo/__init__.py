"""Demo content shipped with Caroni: templates anyone can load to try a setup.

The job types these templates name are defined with the demo agent content.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent


def demo_template_paths() -> dict[str, Path]:
    """Template name -> file, for every demo template (the name is the file stem)."""
    return {path.stem: path for path in sorted(DEMO_DIR.glob("*.cwl"))}
