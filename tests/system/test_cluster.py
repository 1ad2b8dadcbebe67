"""`voicedrop run --ray`: the daemon claims and publishes, Ray actors run the jobs.

Real daemons (`voicedrop run` processes) on real spools, real Ray clusters on this machine
with fake GPUs (Ray's `num_gpus` on a CPU-only node gives each actor its own
CUDA_VISIBLE_DEVICES), the offline engines: `noop` (a TTS whose compute is a wait) and
`tape` (a conversion per named model, so "voices" are distinct residency keys). Faults
are real: a worker process killed with SIGKILL, a Ray node removed, the head killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]
VOICES = ("a", "b", "c")
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def config(tmp: Path, **ray_settings: Any) -> Path:
    lines = [
        f'spool = "{tmp / "spool"}"',
        'device = "cpu"',
        "[watcher]",
        "stable_delay_s = 0.0",
        "[limits]",
        "retry_delay_s = 0.2",
        *(f'[models.{v}]\nengine = "tape"' for v in VOICES),
        "[ray]",
        *(f"{k} = {json.dumps(v)}" for k, v in ray_settings.items()),
    ]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    (tmp / "spool" / "inbox").mkdir(parents=True)
    return path


LONG_S = 600.0  # a job a fault must land in: it cannot end first, whatever the load


def drop_jobs(
    tmp: Path, n: int, work_s: float, voices: tuple[str, ...] = VOICES, long: tuple[int, ...] = ()
) -> None:
    for i in range(n):
        manifest = {
            "text": f"job {i}",
            "tts": {"engine": "noop", "options": {"work_s": LONG_S if i in long else work_s}},
            "convert": {"engine": "tape", "model": voices[i % len(voices)]},
        }
        (tmp / "spool" / "inbox" / f"j{i:02d}.json").write_text(json.dumps(manifest))


def shorten(tmp: Path, job_id: str) -> None:
    """A long job's next attempt is short: its manifest in work/ is read again per attempt
    (the one running has its copy), so the fault is certain and the retry quick."""
    path = tmp / "spool" / "work" / job_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tts"]["options"]["work_s"] = 0.05
    path.write_text(json.dumps(manifest))


def long_jobs_running(tmp: Path, proc: subprocess.Popen[str], n: int) -> list[dict[str, Any]]:
    """Wait until `n` workers are busy with long jobs (dropped with `long=`); those workers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        busy = [w for w in workers(tmp) if w["state"] == "busy" and w.get("job_id")]
        long = [w for w in busy if _is_long(tmp, w["job_id"])]
        if len(long) >= n:
            return long
        time.sleep(0.05)
    raise AssertionError(f"{n} long jobs never ran at once")


def _is_long(tmp: Path, job_id: str) -> bool:
    try:
        manifest = json.loads((tmp / "spool" / "work" / job_id / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest["tts"]["options"]["work_s"] == LONG_S


def head(cfg: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEDROP_")} | ENV
    return subprocess.Popen(
        [sys.executable, "-m", "voicedrop", "--config", str(cfg), "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def reports(tmp: Path) -> dict[str, dict[str, Any]]:
    spool = tmp / "spool"
    found = {}
    for folder in (spool / "outbox", spool / "failed"):
        for report in folder.glob("*/report.json"):
            data = json.loads(report.read_text())
            assert data["job_id"] not in found, f"{data['job_id']} published twice"
            found[data["job_id"]] = data
    return found


def all_done_once(tmp: Path, n: int) -> dict[str, dict[str, Any]]:
    done = reports(tmp)
    assert sorted(done) == [f"j{i:02d}" for i in range(n)]
    assert {r["status"] for r in done.values()} == {"done"}, [
        r["error"] for r in done.values() if r["error"]
    ]
    spool = tmp / "spool"
    assert list((spool / "work").iterdir()) == [] and list((spool / "inbox").glob("*.json")) == []
    return done


def voice_loads(done: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    """(actor, voice model) pairs read from disk: each is a load a GPU paid for."""
    return {
        (r["worker"]["actor"], e["key"])
        for r in done.values()
        for e in r["events"]
        if e["event"] in ("load", "prefetch") and e["key"].startswith("tape:")
    }


def workers(tmp: Path) -> list[dict[str, Any]]:
    try:
        status = json.loads((tmp / "spool" / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return []
    return list(status.get("workers", []))


def test_two_actors_run_every_job_once_and_routing_loads_fewer_voices(tmp_path: Path):
    runs = {}
    for routing in ("resident", "round-robin"):
        tmp = tmp_path / routing
        tmp.mkdir()
        cfg = config(tmp, address="local", local_gpus=2, local_cpus=2, routing=routing)
        drop_jobs(tmp, 40, work_s=0.02)
        finish(head(cfg, "--once"))
        runs[routing] = all_done_once(tmp, 40)
    resident, robin = (voice_loads(runs[r]) for r in ("resident", "round-robin"))
    assert {r["worker"]["actor"] for r in runs["resident"].values()} == {"worker-0", "worker-1"}
    assert {r["worker"]["gpu"] for r in runs["resident"].values()} == {"0", "1"}
    assert all(r["attempt"] == 1 for run in runs.values() for r in run.values())
    assert len(robin) == 6  # every voice on both actors
    assert len(resident) < len(robin), (sorted(resident), sorted(robin))


def test_a_worker_killed_mid_job_its_job_runs_again_counted(tmp_path: Path):
    cfg = config(tmp_path, address="local", local_gpus=2, local_cpus=2)
    drop_jobs(tmp_path, 6, work_s=0.2, long=(0,))
    proc = head(cfg, "--once")
    [victim] = long_jobs_running(tmp_path, proc, 1)
    shorten(tmp_path, victim["job_id"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEDROP_")}
    status = subprocess.run(
        [sys.executable, "-m", "voicedrop", "--config", str(cfg), "status"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = [line for line in status.stdout.splitlines() if line.startswith("worker:")]
    gpus = {line.split("(GPU ")[1].split(",")[0] for line in lines}
    assert len(lines) == 2 and gpus == {"0", "1"}, status.stdout  # a card each, in any order
    os.kill(victim["pid"], signal.SIGKILL)
    finish(proc)
    done = all_done_once(tmp_path, 6)
    lost = done[victim["job_id"]]
    assert lost["attempt"] == 2
    assert [e["code"] for e in lost["previous_errors"]] == ["worker_lost"]
    assert all(r["attempt"] == 1 for job, r in done.items() if job != victim["job_id"])


def test_low_on_one_actor_normal_on_the_other(tmp_path: Path):
    cfg = config(tmp_path, address="local", local_gpus=2, local_cpus=2, policies=["low", "normal"])
    drop_jobs(tmp_path, 8, work_s=0.05, voices=("a",))
    finish(head(cfg, "--once"))
    done = all_done_once(tmp_path, 8)
    by_policy: dict[str, Counter[str]] = {"low": Counter(), "normal": Counter()}
    for r in done.values():
        assert (
            r["worker"]["policy"] == {"worker-0": "low", "worker-1": "normal"}[r["worker"]["actor"]]
        )
        by_policy[r["worker"]["policy"]].update(e["event"] for e in r["events"])
    assert by_policy["low"]["demote"] >= 2 and by_policy["normal"]["demote"] == 0
    assert all(
        r["vram"]["after"]["low_vram_mode"] is (r["worker"]["policy"] == "low")
        for r in done.values()
    )


@pytest.fixture
def two_nodes():
    """A Ray cluster of two nodes on this machine, one fake GPU each."""
    from ray.cluster_utils import Cluster

    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    second = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster, second
    finally:
        cluster.shutdown()


def test_a_node_removed_mid_run_loses_no_job(tmp_path: Path, two_nodes):
    cluster, second = two_nodes
    cfg = config(tmp_path, address=cluster.address, max_restarts=1)
    drop_jobs(tmp_path, 8, work_s=0.2, long=(0, 1))
    proc = head(cfg, "--once")
    running = long_jobs_running(tmp_path, proc, 2)  # one on each node
    [victim] = [w for w in running if w["node"].endswith(second.node_id[:8])]
    [other] = [w for w in running if w is not victim]
    for worker in running:
        shorten(tmp_path, worker["job_id"])
    cluster.remove_node(second)
    os.kill(other["pid"], signal.SIGKILL)  # its long job must not hold the test up either
    finish(proc)
    done = all_done_once(tmp_path, 8)
    assert done[victim["job_id"]]["attempt"] == 2
    assert [e["code"] for e in done[victim["job_id"]]["previous_errors"]] == ["worker_lost"]
    assert done[victim["job_id"]]["worker"]["node"] != victim["node"]


def test_the_head_killed_while_actors_run_jobs_recovers_and_doubles_nothing(
    tmp_path: Path, two_nodes
):
    cluster, _ = two_nodes
    cfg = config(tmp_path, address=cluster.address)
    drop_jobs(tmp_path, 10, work_s=0.2, long=(3, 4))
    proc = head(cfg)
    running = long_jobs_running(tmp_path, proc, 2)  # both actors, and three jobs done before
    for worker in running:
        shorten(tmp_path, worker["job_id"])
    proc.send_signal(signal.SIGKILL)  # its actors die with it (Ray owns them by the driver)
    proc.communicate()
    finish(head(cfg, "--once"))
    done = all_done_once(tmp_path, 10)
    retried = {job for job, r in done.items() if r["attempt"] == 2}
    assert retried == {w["job_id"] for w in running}  # what ran on the actors, nothing else
    assert all(r["attempt"] <= 2 for r in done.values())
