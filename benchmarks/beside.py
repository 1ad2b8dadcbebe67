"""The whole suite under load: N rounds, each running two copies of it side by side.

    python benchmarks/beside.py [--rounds 3] [-- PYTEST_ARGS...]

CI runs on a busy 2-core machine; a test that waits on a guess of how long work takes
(instead of on a state: a file, a log event, a status) passes on a quiet machine and
fails there. Two copies of the suite at once make every machine a busy one. Each round
starts both copies together and waits for both; a round is green when both pass. Prints
each copy's exit status, summary line and wall time, and exits non-zero unless every
round was green. Run from the project root, after `make test` built the venv.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to both copies")
    args = parser.parse_args()
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    green = 0
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            copies = []
            for copy in ("a", "b"):
                log = Path(tmp) / f"{copy}.log"
                command = [
                    sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--basetemp={Path(tmp) / copy}", *args.pytest_args,
                ]  # fmt: skip
                proc = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
                )
                copies.append((copy, proc, log))
            ok = True
            for copy, proc, log in copies:
                rc = proc.wait()
                lines = log.read_text().splitlines()
                summary = next(
                    (ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed)", ln)), ""
                )
                print(f"round {round_} copy {copy}: rc={rc} {summary.strip('= ')}", flush=True)
                if rc != 0:
                    ok = False
                    # The log is removed with the round: print the failures' details.
                    failures = next(
                        (i for i, ln in enumerate(lines) if "= FAILURES =" in ln),
                        max(0, len(lines) - 50),
                    )
                    print("\n".join(lines[failures:][-400:]), flush=True)
            print(
                f"round {round_}: {'green' if ok else 'RED'} in {time.monotonic() - started:.0f} s"
            )
            green += ok
    print(f"{green} of {args.rounds} rounds green")
    return 0 if green == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
