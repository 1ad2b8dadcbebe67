"""Past one host, as far as one machine can show it: Ray across two network namespaces.

    sudo .venv/bin/python benchmarks/multihost.py [--jobs 20] [--json]

Needs root (network namespaces) and iproute2. Two namespaces joined by a veth pair, each
with an address of its own, stand for two hosts: the *head* runs a Ray head node, the
spool and the voicedrop daemon (`run --ray HEAD:PORT`); the *node* runs a Ray worker node
with its own temporary, scratch and model folders — nothing on disk is shared with the
head: manifests, reference recordings and outputs travel through Ray as they would
between hosts. Each node declares one (fake) GPU, so each runs one voicedrop actor.

A queue of jobs runs (the offline `noop` engine, whose compute is a wait, and a `tape`
conversion per voice): half of them first, until both hosts have run some; then two long
ones and the rest. When both actors are busy with a long job, the worker node is removed
(every process of its namespace killed, as a host losing its power) while its job is in
flight. The daemon retries that job, counted (`worker_lost`), on the head's actor. The run ends when
every job is done; the namespaces and every process are removed whatever happens.

Prints one JSON line (`--json`): the spool (kept, to be read), the jobs, the jobs per
node and per address, the jobs retried after the node loss, what was left in `work/`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6389
LONG_S = 20.0  # the jobs the node removal lands in: they cannot end first
WORK_S = 0.5
VOICES = ("a", "b", "c")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def sh(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()[-500:]}")
    return done.stdout


@contextlib.contextmanager
def two_hosts(tag: str) -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    """Two namespaces joined by a veth pair: ((head ns, address), (node ns, address))."""
    head, node = f"vd-head-{tag}", f"vd-node-{tag}"
    net = f"10.{200 + int(tag) % 50}.{int(tag) % 250}"
    try:
        for ns in (head, node):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"vdh{tag}", "type", "veth", "peer", "name", f"vdn{tag}")
        for ns, end, host in ((head, f"vdh{tag}", 1), (node, f"vdn{tag}", 2)):
            sh("ip", "link", "set", end, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{net}.{host}/24", "dev", end)
            sh("ip", "-n", ns, "link", "set", end, "up")
        yield (head, f"{net}.1"), (node, f"{net}.2")
    finally:
        for ns in (head, node):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: removed in one kill
    )


def remove_host(ns: str, proc: subprocess.Popen[bytes]) -> None:
    """Every process of a namespace killed at once, as a host that loses its power
    (`ray stop` would not do: it stops every Ray process of the machine, the head's too)."""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def ray_node(
    ns: str, address: str, folder: Path, log: Path, head: str | None
) -> subprocess.Popen[bytes]:
    """A Ray node (`ray start --block`) in `ns` at `address`, with folders of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **RAY_ENV, "TMPDIR": str(folder), "RAY_TMPDIR": str(folder)}
    args = [str(BIN / "ray"), "start", "--block", "--node-ip-address", address,
            "--num-cpus", "2", "--num-gpus", "1", "--object-store-memory", str(100 * 1024**2),
            "--disable-usage-stats"]  # fmt: skip
    if head is None:
        args += ["--head", "--port", str(PORT), "--include-dashboard", "false",
                 "--temp-dir", str(folder / "ray")]  # fmt: skip
    else:
        args += ["--address", head]
    return in_ns(ns, args, env, log)


def wait(what: str, ready: Any, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready()
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def cluster_nodes(ns: str, head: str) -> int:
    probe = f"import ray; ray.init(address='{head}', log_to_driver=False); "
    probe += "print(sum(1 for n in ray.nodes() if n['Alive']))"
    env = {**os.environ, **RAY_ENV}
    command = ["ip", "netns", "exec", ns, sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0


def setup(root: Path, head: str, jobs: int) -> tuple[Path, Path]:
    spool = root / "spool"
    (spool / "inbox").mkdir(parents=True)
    lines = [
        f'spool = "{spool}"', 'device = "cpu"', 'log_format = "json"',
        "[watcher]", "stable_delay_s = 0.0",
        "[limits]", "retry_delay_s = 0.5",
        *(f'[models.{v}]\nengine = "tape"' for v in VOICES),
        "[ray]", f'address = "{head}"', "max_restarts = 1",
    ]  # fmt: skip
    cfg = root / "config.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return spool, cfg


def drop(spool: Path, numbers: range) -> None:
    """Jobs j00, j01 … into the inbox (renamed in); j00 and j01 are the long ones."""
    for i in numbers:
        manifest = {
            "text": f"Job {i}.",
            "tts": {"engine": "noop", "options": {"work_s": LONG_S if i < 2 else WORK_S}},
            "convert": {"engine": "tape", "model": VOICES[i % len(VOICES)]},
        }
        staged = spool / "inbox" / f".j{i:02d}.tmp"
        staged.write_text(json.dumps(manifest))
        staged.rename(spool / "inbox" / f"j{i:02d}.json")


def busy_long(spool: Path) -> list[dict[str, Any]]:
    """The workers busy with a long job, as the daemon's status file says."""
    try:
        status = json.loads((spool / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return []
    busy = []
    for worker in status.get("workers", []):
        job = worker.get("job_id")
        if worker.get("state") == "busy" and job in ("j00", "j01"):
            busy.append(worker)
    return busy if len(busy) == 2 else []


def addresses(spool: Path) -> set[str]:
    """The addresses of the hosts that ran the jobs done so far."""
    found = set()
    for path in (spool / "outbox").glob("*/report.json"):
        with contextlib.suppress(OSError, ValueError):
            found.add((json.loads(path.read_text()).get("worker") or {}).get("address"))
    return found - {None}


def shorten(spool: Path, job_id: str) -> None:
    """A long job's next attempt is short (its manifest in work/ is read per attempt)."""
    path = spool / "work" / job_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tts"]["options"]["work_s"] = WORK_S
    path.write_text(json.dumps(manifest))


def reports(spool: Path) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for folder in ("outbox", "failed"):
        for path in (spool / folder).glob("*/report.json"):
            data = json.loads(path.read_text())
            found.setdefault(data["job_id"], []).append(data)
    return found


def run(jobs: int) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("needs root and iproute2 (ip netns)")
    root = Path(tempfile.mkdtemp(prefix="voicedrop-multihost-"))
    tag = str(os.getpid() % 10000)
    with two_hosts(tag) as ((head_ns, head_ip), (node_ns, node_ip)):
        head = f"{head_ip}:{PORT}"
        head_ray = ray_node(head_ns, head_ip, root / "head", root / "head-ray.log", None)
        wait("the Ray head", lambda: cluster_nodes(head_ns, head) >= 1)
        node_ray = ray_node(node_ns, node_ip, root / "node", root / "node-ray.log", head)
        wait("the worker node", lambda: cluster_nodes(head_ns, head) >= 2)
        spool, cfg = setup(root, head, jobs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEDROP_")} | RAY_ENV
        daemon = in_ns(head_ns, [sys.executable, "-m", "voicedrop", "--config", str(cfg), "run"],
                       {**env, "PYTHONPATH": str(ROOT)}, root / "daemon.log")  # fmt: skip
        try:
            first = range(2, jobs // 2 + 1)  # short jobs: both hosts run some
            drop(spool, first)
            wait("the first jobs on both hosts", lambda: len(addresses(spool)) >= 2)
            drop(spool, range(2))  # the long ones, then the rest behind them
            drop(spool, range(jobs // 2 + 1, jobs))
            running = wait("both actors busy with a long job", lambda: busy_long(spool))
            victim = next(w for w in running if w.get("address") == node_ip)["job_id"]
            for worker in running:
                shorten(spool, worker["job_id"])
            removed_at = time.monotonic()
            remove_host(node_ns, node_ray)  # the host goes away, its job in flight
            wait("every job", lambda: len(reports(spool)) >= jobs, timeout=300)
            finished_s = time.monotonic() - removed_at
        finally:
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=60)
            kill(daemon)
            kill(head_ray)
    done = reports(spool)
    first = {job: r[0] for job, r in done.items()}
    retried = sorted(
        job
        for job, r in first.items()
        if any(e.get("code") == "worker_lost" for e in r.get("previous_errors") or [])
    )
    return {
        "benchmark": "multihost",
        "spool": str(spool),
        "jobs": jobs,
        "done_once": sum(1 for r in done.values() if len(r) == 1 and r[0]["status"] == "done"),
        "jobs_per_node": Counter((r.get("worker") or {}).get("node") for r in first.values()),
        "jobs_per_address": Counter((r.get("worker") or {}).get("address") for r in first.values()),
        "head_address": head_ip,
        "node_address": node_ip,
        "removed_node_job": victim,
        "retried_after_node_loss": retried,
        "seconds_from_removal_to_all_done": round(finished_s, 1),
        "work_left": len(list((spool / "work").iterdir())),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.jobs)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{figures['done_once']}/{figures['jobs']} jobs done once, on nodes "
        f"{dict(figures['jobs_per_node'])} at {dict(figures['jobs_per_address'])}; "
        f"the worker node ({figures['node_address']}) removed during "
        f"{figures['removed_node_job']}: "
        f"retried {figures['retried_after_node_loss']}, all done "
        f"{figures['seconds_from_removal_to_all_done']} s later; work/ left: "
        f"{figures['work_left']}; spool {figures['spool']}"
    )


if __name__ == "__main__":
    main()
