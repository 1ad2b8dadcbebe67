"""The reliability suite, longer: the same tests as `make test`, N times the rounds and jobs.

    .venv/bin/python benchmarks/stress.py --scale 10

Runs the kill -9 torture, the bursts, the inotify overflow, the full disk, two daemons on
one spool and the property tests with every count multiplied by `--scale` (through
`VOICEDROP_STRESS`, which the tests read), then prints each test's outcome, time and the
figures it recorded, with the commit they came from. Exits 1 if any test failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = [
    "tests/system/test_kill9_torture.py",
    "tests/system/test_burst.py",
    "tests/system/test_inotify_overflow.py",
    "tests/system/test_disk_full.py",
    "tests/system/test_two_daemons.py",
    "tests/unit/test_manifest.py::test_no_input_raises_anything_but_a_manifest_error",
    "tests/unit/test_residency_sets.py::test_no_sequence_runs_out_of_memory_when_every_stage_fits",
]


class Collector:
    """A pytest plugin that keeps each test's outcome, duration and recorded figures."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            reason = ""
            if report.skipped and isinstance(report.longrepr, tuple):
                reason = str(report.longrepr[2])
            self.rows.append(
                {
                    "test": report.nodeid,
                    "outcome": report.outcome,
                    "seconds": report.duration,
                    "figures": dict(report.user_properties),
                    "reason": reason,
                }
            )


def commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="multiply every count (default 10)")
    parser.add_argument("-k", default="", help="only tests matching this pytest expression")
    args = parser.parse_args(argv)
    os.environ["VOICEDROP_STRESS"] = str(args.scale)  # read by the test modules on import
    os.chdir(ROOT)
    import pytest

    collector = Collector()
    started = time.monotonic()
    extra = ["-k", args.k] if args.k else []
    extra += [f"--timeout={300 * args.scale}"]  # the suite's per-test limit, scaled too
    code = pytest.main(["-q", "-p", "no:cacheprovider", *extra, *SUITE], plugins=[collector])
    print(
        f"\nreliability suite x{args.scale}, commit {commit()}, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s in all\n"
    )
    print("| test | result | s | figures |")
    print("| --- | --- | --- | --- |")
    for row in collector.rows:
        figures = ", ".join(f"{k} {v}" for k, v in row["figures"].items()) or row["reason"]
        print(f"| {row['test']} | {row['outcome']} | {row['seconds']:.1f} | {figures} |")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
