"""Never lost: random sequences of jobs of every origin, interleaved with kill -9, step-
asides and transient faults, against a real `voicedrop run --http` on a real spool.

Origins: a manifest with its script beside it; `voicedrop submit` (its script staged
privately under inbox/refs/); a subtitle or text file saved into a preset hot folder; an
HTTP request with an uploaded reference recording; a job of a higher priority that makes
a running script job step aside. Events: kill -9 (and a restart), a transient fault for a
moment (every sentence fails while it lasts), a pause. Each job must end exactly once,
done, with every cue's clip and its dub track, and nothing may be left in inbox/refs/,
work/, the preset folder or the inbox.

The same holds with the device worker process (`[residency] worker = "process"`), whose
death with the daemon's is part of every kill. `VOICEDROP_STRESS=50 pytest
tests/system/test_never_lost.py` runs 200 sequences of each.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import stress
from tests.system.test_daemon import env_for
from tests.system.test_http import Server

pytestmark = pytest.mark.system
WORK_S = 0.08  # each cue's engine time: long enough for kills and step-asides to land mid-job

action = st.one_of(
    st.tuples(st.just("manifest"), st.integers(1, 6)),
    st.tuples(st.just("submit"), st.integers(1, 6)),
    st.tuples(st.just("hot"), st.integers(1, 6)),
    st.tuples(st.just("hot-txt"), st.integers(1, 4)),
    st.tuples(st.just("http"), st.just(1)),
    st.tuples(st.just("urgent"), st.just(1)),
    st.tuples(st.just("kill"), st.integers(0, 40)),  # after this many tens of ms
    st.tuples(st.just("fault"), st.integers(1, 8)),  # for this many tenths of a second
    st.tuples(st.just("pause"), st.integers(0, 5)),
)


def srt(cues: int) -> str:
    return "".join(
        f"{i}\n00:00:{2 * i:02},000 --> 00:00:{2 * i + 1:02},000\nLine {i}.\n\n"
        for i in range(1, cues + 1)
    )


def txt(paragraphs: int) -> str:
    return "".join(f"Paragraph {i}.\n\n" for i in range(1, paragraphs + 1))


def reference_wav() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 3, np.float32), 16000, format="WAV")
    return buf.getvalue()


@dataclass
class Run:
    """One sequence's spool, its daemon, and what each job must end as."""

    root: Path
    expected: dict[str, int | None] = field(default_factory=dict)  # job -> cues (None: text)
    dubbed: set[str] = field(default_factory=set)  # script jobs with a timeline
    server: Server | None = None

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def fault(self) -> Path:
        return self.root / "fault"

    def env(self) -> dict[str, str]:
        return {"VOICEDROP_CONFIG": str(self.root / "voicedrop.toml")}

    def start(self) -> None:
        self.server = Server(self.spool, **self.env())

    def kill(self) -> None:
        assert self.server is not None
        self.server.http.close()
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(timeout=30)
        self.start()

    def do(self, n: int, kind: str, arg: int) -> None:
        inbox = self.spool / "inbox"
        assert self.server is not None
        if kind == "manifest":
            (inbox / f"m{n}.srt").write_text(srt(arg))
            stage = inbox / ".incoming" / f"m{n}.partial"
            stage.write_text(json.dumps({"script": f"m{n}.srt", "tts": {"engine": "noop"}}))
            stage.rename(inbox / f"m{n}.json")
            self.expected[f"m{n}"] = arg
            self.dubbed.add(f"m{n}")
        elif kind == "submit":
            folder = self.root / f"job{n}"
            folder.mkdir()
            (folder / "s.srt").write_text(srt(arg))
            (folder / f"s{n}.json").write_text(
                json.dumps({"script": "s.srt", "tts": {"engine": "noop"}})
            )
            out = subprocess.run(
                [sys.executable, "-m", "voicedrop", "submit", str(folder / f"s{n}.json")],
                env=env_for(self.spool, **self.env()),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            job_id = out.stdout.split()[-1]
            assert job_id.startswith(f"s{n}-"), out.stdout
            self.expected[job_id] = arg
            self.dubbed.add(job_id)
        elif kind in ("hot", "hot-txt"):
            suffix, text = (".srt", srt(arg)) if kind == "hot" else (".txt", txt(arg))
            stage = self.root / f"h{n}{suffix}"
            stage.write_text(text)
            stage.rename(inbox / "dub" / stage.name)  # saved whole, as an editor's export
            self.expected[f"h{n}"] = arg
            if kind == "hot":
                self.dubbed.add(f"h{n}")
        elif kind == "http":
            answer = self.server.http.post(
                "/tts/synthesize",
                data={"text": f"Request {n}.", "tts_engine": "noop"},
                files={"reference": ("me.wav", reference_wav())},
            )
            assert answer.status_code == 202, answer.text
            self.expected[answer.json()["id"]] = None
        elif kind == "urgent":
            stage = inbox / ".incoming" / f"u{n}.partial"
            stage.write_text(json.dumps({"text": "Now.", "tts": {"engine": "noop"}, "priority": 9}))
            stage.rename(inbox / f"u{n}.json")
            self.expected[f"u{n}"] = None
        elif kind == "kill":
            time.sleep(arg / 100)
            self.kill()
        elif kind == "fault":
            self.fault.touch()
            time.sleep(arg / 10)
            self.fault.unlink()
        elif kind == "pause":
            time.sleep(arg / 10)

    def reports(self, job_id: str) -> list[dict]:
        found = []
        for folder in ("outbox", "failed"):
            for job in (self.spool / folder).iterdir():
                if job.name == job_id or job.name.startswith(f"{job_id}-"):
                    report = job / "report.json"
                    if report.exists():
                        found.append(json.loads(report.read_text()))
        return found

    def settled(self) -> bool:
        return all(self.reports(job_id) for job_id in self.expected)


def configure(root: Path, worker: str) -> Run:
    run = Run(root)
    (run.spool / "inbox" / ".incoming").mkdir(parents=True)
    (root / "voicedrop.toml").write_text(
        f"""
[residency]
worker = "{worker}"
[limits]
retry_delay_s = 0.1
max_attempts = 8
[engines.noop]
work_s = {WORK_S}
fault_file = "{run.fault}"
[presets.dub]
tts = {{ engine = "noop" }}
"""
    )
    return run


@pytest.mark.parametrize("worker", ["inline", "process"])
def test_every_job_of_every_origin_ends_once_whole_through_kills_faults_and_step_asides(
    tmp_path: Path, figures, worker: str
):
    counts = {"sequences": 0, "jobs": 0, "kills": 0, "faults": 0, "asides": 0}

    @settings(
        max_examples=stress(4),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(action, min_size=1, max_size=8))
    def sequence(actions: list[tuple[str, int]]) -> None:
        counts["sequences"] += 1
        run = configure(tmp_path / f"seq{counts['sequences']:04}", worker)
        run.start()
        try:
            for n, (kind, arg) in enumerate(actions):
                run.do(n, kind, arg)
            deadline = time.monotonic() + 120
            while not run.settled():
                assert run.server is not None and run.server.proc.poll() is None
                assert time.monotonic() < deadline, f"not every job ended: {run.expected}"
                time.sleep(0.1)
        finally:
            run.fault.unlink(missing_ok=True)
            assert run.server is not None and run.server.stop() == 0
        for job_id, cues in run.expected.items():
            [report] = run.reports(job_id)  # exactly once: no job-2 for the same job
            assert report["job_id"] == job_id
            assert report["status"] == "done", (job_id, report["error"])
            if cues is not None:
                clips = [o for o in report["outputs"] if o["segment"] != "dub"]
                assert len(clips) == cues, (job_id, report["outputs"])
                folder = run.spool / "outbox" / job_id
                assert all((folder / o["file"]).is_file() for o in report["outputs"])
            if job_id in run.dubbed:
                assert report["script"]["cues"] == cues and report["script"]["dub"]
            counts["asides"] += len(report["paused"])
        inbox = run.spool / "inbox"
        assert list((inbox / "refs").iterdir()) == []
        assert list((run.spool / "work").iterdir()) == []
        assert list((inbox / "dub").iterdir()) == []
        assert list(inbox.glob("*.json")) == []
        assert not list((inbox / ".incoming").glob(".preset-*"))
        counts["jobs"] += len(run.expected)
        counts["kills"] += sum(kind == "kill" for kind, _ in actions)
        counts["faults"] += sum(kind == "fault" for kind, _ in actions)

    sequence()
    figures(**counts)
