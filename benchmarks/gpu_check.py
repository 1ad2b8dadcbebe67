"""The prepared GPU check: its steps in order of value, each reporting as soon as it ends.

    python3 benchmarks/gpu_check.py first|second|all [--device cuda|cpu] [--out DIR]
                                    [--budget-s S] [--steps a,b]

A lent machine gives 15 minutes in all, its start-up (~90 s) included, and at most 600 s
a call. The check is planned as two calls that fit that with room to spare (`CALLS`,
checked by a test): `first` (at most 420 s: what only a card can show, most telling
first) and `second` (at most 360 s: the rest). `benchmarks/gpu_check.sh CALL` installs
the carried wheels inside the call's budget, then runs this. Each step is a command of
its own with a timeout within what is left; one that fails or runs out is recorded
(exit status, seconds, the end of its output) and the next one runs. After every step
the two files that come back are written again, so a call cut short still returns every
figure it finished: `gpu-check-CALL.json` (every step's JSON result; `left`: the steps
the budget did not reach, and the command that runs them) and
`gpu-check-CALL-logs.tar.gz` (every step's whole output).

The steps share one folder of models built once per call (`build_models`): on a card
the published architectures at full size with random weights, on the CPU tiny ones.

`--device cpu` is the dry run (`make gpu-dry-run`): `gpu_check.sh` itself, on Python
3.12 with the torch of the lent image and the carried wheels, every step on tiny models.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MARGIN_S = 10.0  # kept back from a call's budget: writing the results, the call's own exit
STARTUP_S = 90.0  # a lent machine's start, before the first call runs
DEVICE_TIME_S = 900.0  # all a lent machine gives, start-up included
INSTALL_S = 25.0  # gpu_check.sh: the carried wheels into a folder of their own
CPU_SLOWER = 5.0  # the dry run's step timeouts: the card's, times this


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    timeout_s: float  # on a card; the dry run's budget is its own
    env: tuple[tuple[str, str], ...] = ()


def steps(device: str, models: Path) -> dict[str, Step]:
    """Every step, by name. On a card with real-size models; on the CPU with tiny ones."""
    gpu = device == "cuda"
    size = ["--real-size"] if gpu else []
    on = ["--device", device]
    where = ["--models", str(models)]
    probe = [PY, "benchmarks/gpu_probes.py"]
    pytest = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest"]
    table = {s.name: s for s in [
        Step("environment", [PY, "benchmarks/gpu_check.py", "--environment"], 10),
        Step("build_models", [PY, "benchmarks/gpu_check.py", "--build", str(models), *size], 100),
        # (a) time to first audio and real-time factor per engine
        Step("first_audio", [PY, "benchmarks/first_audio.py", *size, *on, *where,
                             "--repeat", "1", "--json"], 80),
        # (b) XTTS then RVC under LOW in one process: order, peak ÷ stage, bytes left
        Step("xtts_rvc_low", [*probe, "low", *on, *where, *size, "--jobs", "2"], 60),
        # (c) a whole model promoted ÷ a pinned copy of the same tensors
        Step("promote", [*probe, "promote", *on, *where, *size, "--rounds", "4"], 25),
        # (d) LOW ÷ NORMAL on a mixed queue, each set-up in a fresh process
        # (on the CPU its modeled card is charged the tiny models' loads, measured here)
        Step("throughput", [PY, "benchmarks/throughput.py", *on,
                            *(where if gpu else ["--real-models", str(models)]),
                            "--setups", "voicedrop-low,normal",
                            "--repeat", "1", "--jobs", "4", "--json"], 105),
        # (e) cold load ÷ raw read of the same file, written back and evicted first
        Step("cold_loads", [PY, "benchmarks/cold_load.py", *size, *on, *where,
                            "--repeat", "1", "--json"], 80),
        Step("dtypes", [*probe, "dtypes", *on, "--engines", "xtts,f5tts,rvc"], 35),
        Step("selftest", [PY, "-m", "voicedrop", "selftest", "--json"], 30,
             (("VOICEDROP_DEVICE", device),)),
        Step("worker", [PY, "benchmarks/gpu_worker.py", *on, "--rounds", "2" if gpu else "1",
                        "--json"], 45),
        Step("residency_cuda_tests", [*pytest, "tests/engine/test_residency_cuda.py"], 20),
    ]}  # fmt: skip
    if gpu:
        return table
    # the dry run: a busy 2-core CPU is no card; its steps may take several times longer
    return {n: replace(s, timeout_s=s.timeout_s * CPU_SLOWER) for n, s in table.items()}


# the two calls, each step where it is worth most; `all` is the dry run's
CALLS: dict[str, tuple[str, ...]] = {
    "first": ("environment", "build_models", "first_audio", "xtts_rvc_low", "promote",
              "throughput"),
    "second": ("environment", "build_models", "cold_loads", "dtypes", "selftest", "worker",
               "residency_cuda_tests"),
}  # fmt: skip
LIMITS_S = {"first": 420.0, "second": 360.0}


def planned_s(call: str) -> float:
    """What a call may take on a card: its install, its steps' timeouts, the margin."""
    table = steps("cuda", Path("models"))
    return INSTALL_S + sum(table[name].timeout_s for name in CALLS[call]) + MARGIN_S


def run_step(step: Step, left_s: float) -> tuple[dict[str, Any], bytes]:
    timeout = max(1.0, min(step.timeout_s, left_s))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **dict(step.env)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            step.argv, cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False
        )
        rc, output = done.returncode, done.stdout + b"\n--- stderr ---\n" + done.stderr
        stdout = done.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        rc, stdout = None, (exc.stdout or b"").decode(errors="replace")
        output = (exc.stdout or b"") + b"\n--- stderr ---\n" + (exc.stderr or b"")
    record: dict[str, Any] = {
        "rc": rc,
        "timed_out": rc is None,
        "seconds": round(time.monotonic() - started, 1),
        "timeout_s": round(timeout, 1),
        "result": result_of(stdout),
    }
    if rc != 0:
        record["tail"] = output.decode(errors="replace")[-1500:]
    return record, output


def result_of(text: str) -> Any:
    """A step's JSON: its whole output when that is one (indented) document, else the
    last line that parses."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        if line.startswith(("{", "[")):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def environment() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = torch.cuda.get_device_name(0)
            info["capability"] = f"{props.major}.{props.minor}"
            info["memory_gb"] = round(props.total_memory / 1024**3, 1)
    except Exception as exc:  # a broken torch is a finding too
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    for name in ("transformers", "TTS", "f5_tts", "infer_rvc_python", "voicedrop"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "imported")
        except Exception as exc:
            info[name] = f"missing: {type(exc).__name__}: {exc}"[:200]
    return info


def build(models: Path, real: bool) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.cold_load import build as build_models

    started = time.perf_counter()
    build_models(real, models, ("xtts", "f5tts", "rvc"))
    files = [p for p in models.rglob("*") if p.is_file()]
    return {
        "real_size": real,
        "seconds": round(time.perf_counter() - started, 1),
        "bytes": sum(p.stat().st_size for p in files),
    }


class Results:
    """The call's two files, written again after every step (each replaced whole)."""

    def __init__(self, out: Path, call: str, device: str) -> None:
        self.out, self.call = out, call
        self.data: dict[str, Any] = {"call": call, "device": device, "steps": {}, "left": []}
        self.logs: list[tuple[str, bytes]] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, record: dict[str, Any], output: bytes | None) -> None:
        self.data["steps"][name] = record
        if output is not None:
            self.logs.append((f"{name}.log", output))
        self.write()

    def write(self) -> None:
        """The logs first: a step the JSON names has its log beside it."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in self.logs:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        self._replace(f"gpu-check-{self.call}-logs.tar.gz", buffer.getvalue())
        steps = self.data["steps"].values()
        self.data["ok"] = all(s.get("rc") == 0 for s in steps) and not self.data["left"]
        self._replace(f"gpu-check-{self.call}.json", json.dumps(self.data, indent=1).encode())

    def _replace(self, name: str, data: bytes) -> None:
        part = self.out / f".{name}.part"
        part.write_bytes(data)
        part.replace(self.out / name)  # a cut call leaves the last whole file, never half


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("call", nargs="?", choices=[*CALLS, "all"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results"))
    )
    parser.add_argument("--budget-s", type=float, help="the whole call (default: its limit)")
    parser.add_argument("--steps", help="only these steps, comma-separated (a call's `left`)")
    parser.add_argument("--since", type=float, help="when the call began (Unix time)")
    parser.add_argument("--environment", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--real-size", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.environment:
        print(json.dumps(environment()))
        return 0
    if args.build:
        print(json.dumps(build(args.build, args.real_size)))
        return 0
    if args.call is None:
        parser.error("name a call: first, second or all")
    budget = args.budget_s or (
        sum(LIMITS_S.values()) if args.call == "all" else LIMITS_S[args.call]
    )
    spent = time.time() - args.since if args.since else 0.0  # gpu_check.sh's install
    deadline = time.monotonic() + budget - spent - MARGIN_S
    names = list(dict.fromkeys(
        CALLS["first"] + CALLS["second"] if args.call == "all" else CALLS[args.call]
    ))  # fmt: skip
    if args.steps:
        wanted = args.steps.split(",")
        names = [n for n in ("environment", "build_models") if n not in wanted] + wanted
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"voicedrop-gpu-check-{os.getpid()}"
    table = steps(args.device, scratch / "models")
    results = Results(args.out, args.call, args.device)
    try:
        for name in names:
            left = deadline - time.monotonic()
            if left < 5:
                results.data["left"].append(name)
                results.add(name, {"skipped": "the call's time budget ran out"}, None)
                continue
            print(f"{name} …", file=sys.stderr, flush=True)
            record, output = run_step(table[name], left)
            results.add(name, record, output)
            print(f"{name}: rc={record['rc']} in {record['seconds']} s", file=sys.stderr)
        if results.data["left"]:
            results.data["next"] = (
                f"bash benchmarks/gpu_check.sh {args.call} --steps {','.join(results.data['left'])}"
            )
            results.write()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({k: v.get("rc") for k, v in results.data["steps"].items()}))
    return 0 if results.data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
