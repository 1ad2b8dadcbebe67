"""Ray past one host, as far as one machine can show it: benchmarks/multihost.py's set-up
(a head with the spool in one network namespace, a worker node with folders of its own in
another, the worker node removed mid-run), checked the way the Q acceptance reads it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]


def namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"vd-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed here: {made.stderr.strip()[:200]}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.mark.skipif(bool(why := namespaces_unavailable()), reason=why or "")
def test_two_hosts_every_job_once_and_the_lost_hosts_job_retried():
    from benchmarks.multihost import run

    figures = run(12)
    spool = Path(figures["spool"])
    try:
        reports = [json.loads(p.read_text()) for p in spool.glob("*/*/report.json")]
        done = [r for r in reports if r["status"] == "done"]
        assert sorted(r["job_id"] for r in done) == [f"j{i:02d}" for i in range(12)]
        assert len(reports) == 12 and figures["work_left"] == 0
        addresses = {r["worker"]["address"] for r in done}
        assert addresses == {figures["head_address"], figures["node_address"]}
        victim = next(r for r in done if r["job_id"] == figures["removed_node_job"])
        assert [e["code"] for e in victim["previous_errors"]] == ["worker_lost"]
        assert victim["attempt"] == 2 and victim["worker"]["address"] == figures["head_address"]
    finally:
        shutil.rmtree(spool.parent, ignore_errors=True)
