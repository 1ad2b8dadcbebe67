"""The prepared GPU check: every step of one part, each reporting, all results in one JSON.

    python3 benchmarks/gpu_check.py tts|rvc [--device cuda|cpu] [--out DIR] [--budget-s 440]

One device call runs one part (`tts`: XTTS and F5-TTS; `rvc`); `benchmarks/gpu_check.sh`
installs the carried wheels first. Each step is a command of its own, with a timeout
within what is left of the part's budget: a step that fails or runs out is recorded
(exit status, seconds, the end of its output) and the next one runs. What comes back is
two files: `gpu-check-PART.json` (every step's JSON result, parsed from its last line)
and `gpu-check-PART-logs.tar.gz` (every step's whole output), well under the machine's
limit of 8 files.

`--device cpu` is the dry run CI makes (`make gpu-dry-run`) in a venv holding only the
GPU image's packages and the carried wheels: the same steps on tiny models, so that an
import the image cannot satisfy fails CI instead of the card.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
MARGIN_S = 10.0  # kept back from the budget: packing the results
SCRATCH = Path(os.environ.get("TMPDIR", "/tmp")) / f"voicedrop-gpu-check-{os.getpid()}"
SAVED = {"cold_loads": str(SCRATCH / "cold_loads.out")}  # a step's output a later one reads


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    timeout_s: float
    env: tuple[tuple[str, str], ...] = ()


def steps(part: str, device: str) -> list[Step]:
    """The part's steps, most telling first (a budget that runs out cuts the last)."""
    gpu = device == "cuda"
    engines = "rvc" if part == "rvc" else "xtts,f5tts"
    probe = [PY, "benchmarks/gpu_probes.py"]
    size = ["--real-size"] if gpu else []
    out = [
        Step("environment", [PY, "benchmarks/gpu_check.py", "--environment"], 30),
        Step("dtypes", [*probe, "dtypes", "--device", device, "--engines", engines], 90),
        Step(
            "low_back_at_baseline",
            [
                *probe,
                "low",
                "--device",
                device,
                "--engines",
                engines,
                "--jobs",
                "4" if gpu else "2",
            ],
            120,
        ),
        Step(
            "selftest",
            [PY, "-m", "voicedrop", "selftest", "--json", "--engines", engines],
            120,
            (("VOICEDROP_DEVICE", device),),
        ),
        Step(
            "cold_loads",
            [
                PY,
                "benchmarks/cold_load.py",
                *size,
                "--device",
                device,
                "--engines",
                engines,
                "--repeat",
                "1",
                "--json",
            ],
            150,
        ),
    ]
    if part == "tts":
        out.insert(1, Step("promote", [*probe, "promote", "--device", device,
                           "--mb", "1024" if gpu else "16"], 60))  # fmt: skip
        throughput = [PY, "benchmarks/throughput.py", "--device", device, "--no-rvc",
                      "--repeat", "1", "--jobs", "6" if gpu else "2", "--json"]  # fmt: skip
        if gpu:
            out.insert(4, Step("throughput", throughput, 180))
        else:  # the CPU's modeled GPU is charged this run's (tiny) cold loads
            out.append(Step("throughput", [*throughput, "--load-costs", SAVED["cold_loads"]],
                            180))  # fmt: skip
        if gpu:
            out.append(Step("residency_cuda_tests", [PY, "-m", "pytest", "-q",
                            "-p", "no:cacheprovider", "tests/engine/test_residency_cuda.py"],
                            60))  # fmt: skip
    else:
        # the device worker: nothing held once idle, its cold start, a neighbour at 70 %
        out.insert(2, Step("worker", [PY, "benchmarks/gpu_worker.py", "--device", device,
                           "--rounds", "2" if gpu else "1", "--json"],
                           150 if gpu else 300))  # fmt: skip
        out.append(Step("engines_benchmark", [PY, "benchmarks/engines.py", "--size",
                        "real" if gpu else "tiny", "--device", device, "--engines", "rvc",
                        "--json", "-"], 120))  # fmt: skip
    return out


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
        "result": last_json(stdout),
    }
    if rc != 0:
        record["tail"] = output.decode(errors="replace")[-1500:]
    return record, output


def last_json(text: str) -> Any:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["tts", "rvc"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results"))
    )
    parser.add_argument("--budget-s", type=float, default=440.0, help="the whole part")
    parser.add_argument("--environment", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.environment:
        print(json.dumps(environment()))
        return 0
    if args.part is None:
        parser.error("name a part: tts or rvc")
    deadline = time.monotonic() + args.budget_s - MARGIN_S
    results: dict[str, Any] = {"part": args.part, "device": args.device, "steps": {}}
    logs = io.BytesIO()
    with tarfile.open(fileobj=logs, mode="w:gz") as tar:
        for step in steps(args.part, args.device):
            left = deadline - time.monotonic()
            if left < 5:
                results["steps"][step.name] = {"skipped": "the part's time budget ran out"}
                continue
            print(f"{step.name} …", file=sys.stderr, flush=True)
            record, output = run_step(step, left)
            results["steps"][step.name] = record
            if step.name in SAVED:
                SCRATCH.mkdir(parents=True, exist_ok=True)
                Path(SAVED[step.name]).write_bytes(output.split(b"\n--- stderr ---\n")[0])
            info = tarfile.TarInfo(f"{step.name}.log")
            info.size = len(output)
            tar.addfile(info, io.BytesIO(output))
            print(f"{step.name}: rc={record['rc']} in {record['seconds']} s", file=sys.stderr)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    results["ok"] = all(s.get("rc") == 0 for s in results["steps"].values())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu-check-{args.part}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"gpu-check-{args.part}-logs.tar.gz").write_bytes(logs.getvalue())
    print(json.dumps({k: v.get("rc") for k, v in results["steps"].items()}))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
