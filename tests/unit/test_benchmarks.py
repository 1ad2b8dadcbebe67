"""The benchmarks run as scripts (`python benchmarks/NAME.py`), which puts benchmarks/ first
on sys.path: a file there named like a standard module (say `http.py`) would hide that
module from every import in the run, torch's own included."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_no_benchmark_hides_a_standard_module():
    names = {p.stem for p in BENCHMARKS.glob("*.py")} | {
        p.name for p in BENCHMARKS.iterdir() if p.is_dir()
    }
    assert len(names) > 5  # the folder was found
    assert names & sys.stdlib_module_names == set()
