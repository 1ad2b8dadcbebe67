"""The GPU check must fit the time a lent machine gives (15 minutes in all, start-up
included, at most 600 s a call), and a call cut short must still return what it finished."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

sys.path.remove(str(ROOT / "benchmarks"))


def test_both_calls_fit_the_machine_s_fifteen_minutes():
    first, second = gpu_check.planned_s("first"), gpu_check.planned_s("second")
    assert first <= gpu_check.LIMITS_S["first"] <= 420
    assert second <= gpu_check.LIMITS_S["second"] <= 360
    assert gpu_check.STARTUP_S + gpu_check.LIMITS_S["first"] + gpu_check.LIMITS_S["second"] <= (
        gpu_check.DEVICE_TIME_S
    )


def test_every_step_runs_in_one_call_or_the_other_the_most_telling_first():
    table = gpu_check.steps("cuda", Path("m"))
    planned = set(gpu_check.CALLS["first"]) | set(gpu_check.CALLS["second"])
    assert planned == set(table)
    first = gpu_check.CALLS["first"]
    assert first.index("first_audio") < first.index("xtts_rvc_low") < first.index("promote")
    assert first.index("promote") < first.index("throughput")
    assert "cold_loads" in gpu_check.CALLS["second"]


def test_an_indented_json_result_is_read_whole():
    """The selftest prints indented JSON: read line by line it was `null` in the summary."""
    assert gpu_check.result_of(json.dumps({"a": {"b": 1}}, indent=2)) == {"a": {"b": 1}}
    assert gpu_check.result_of("building …\n" + json.dumps({"x": 2})) == {"x": 2}


@pytest.mark.parametrize("cut_after", [1, 2])
def test_a_call_cut_short_leaves_every_finished_step_in_its_files(tmp_path, cut_after):
    """Each step's result is written as it ends: a call killed midway (the device tool
    returns what is under $OUT) still has the JSON and the logs of the steps before."""
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import gpu_check\n"
        "from pathlib import Path\n"
        "names = ['environment', 'build_models', 'first_audio']\n"
        "def steps(device, models):\n"
        "    quick = [sys.executable, '-c', 'print(\"{\\\\\"ok\\\\\": 1}\")']\n"
        "    hang = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
        f"    return {{n: gpu_check.Step(n, quick if i < {cut_after} else hang, 600)\n"
        "            for i, n in enumerate(names)}\n"
        "gpu_check.steps = steps\n"
        "gpu_check.CALLS['first'] = tuple(names)\n"
        "sys.argv = ['gpu_check.py', 'first', '--device', 'cpu', '--out', sys.argv[1],\n"
        "            '--steps', ','.join(names)]\n"
        "gpu_check.main()\n"
    )
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], cwd=ROOT)
    results = out / "gpu-check-first.json"
    try:
        # wait on the state: the results file naming every finished step
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the check exited ({proc.returncode}) before the hanging step")
            if results.exists():
                done = json.loads(results.read_text())["steps"]
                if len(done) >= cut_after:
                    break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    data = json.loads(results.read_text())
    finished = [n for n, s in data["steps"].items() if s.get("rc") == 0]
    assert finished == ["environment", "build_models"][:cut_after]
    assert all(data["steps"][n]["result"] == {"ok": 1} for n in finished)
    with tarfile.open(out / "gpu-check-first-logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{n}.log" for n in finished)
