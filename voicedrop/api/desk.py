"""What the HTTP side does with the spool, and nothing else: drop jobs, read their state and
results, cancel those not yet started, read the daemon's status. It never loads a model
and never touches a running job; a request that fails half-way leaves nothing in the
inbox (everything is staged in `inbox/.incoming` and dropped by one rename).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import soundfile as sf

from voicedrop.api.notes import Notes
from voicedrop.api.wait import Estimate
from voicedrop.client import check_manifest, submit, vram_view
from voicedrop.config import Settings
from voicedrop.intake import JobCheck
from voicedrop.manifest import AUDIO_SUFFIXES
from voicedrop.report import VramStats, unrun_report
from voicedrop.spool import names, private
from voicedrop.spool.inbox import list_candidates
from voicedrop.spool.jobs import Spool
from voicedrop.spool.sent import forget_audio, mark_unheard
from voicedrop.spool.state import JobState, job_state
from voicedrop.spool.status import STALE_S, DaemonStatus, live_status

REFERENCE_SUFFIX = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3", "AIFF": ".aiff"}


class Rejected(Exception):
    """A request the spool must not take: HTTP status, and `field: reason` problems."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def job_json(state: JobState) -> dict[str, Any]:
    """A job's state as the HTTP API answers it."""
    return {
        "id": state.job_id,
        "status": state.status,
        "stage": state.stage,
        "outputs": [f"/jobs/{state.job_id}/files/{name}" for name in state.outputs],
        "report": state.report and state.report.model_dump(mode="json", by_alias=True),
    }


class Desk:
    """The spool as the HTTP side sees it. `current()` gives the settings and the job check in
    force (the daemon's, which a SIGHUP may replace)."""

    def __init__(
        self,
        current: Callable[[], tuple[Settings, JobCheck]],
        beside: Callable[[], bool] | None = None,
    ) -> None:
        """`beside`: the HTTP side runs in the daemon's own process (`run --http`): whether
        that daemon still runs (its status file may not be written yet at start-up)."""
        self.current = current
        self.spool = Spool.from_settings(current()[0])
        self.beside = beside
        self.notes = Notes(self.spool, current()[0].watcher.mode)  # the spool's changes
        self.estimate = Estimate(self.spool)  # how long a request would wait (wait.py)

    def close(self) -> None:
        self.notes.close()

    def wait_ahead_s(self, priority: int) -> float:
        """Seconds of work before a request of `priority` would begin (api/wait.py)."""
        status = self.daemon()
        return self.estimate.ahead_s(priority, status.job_id if status else None)

    def queue_depth(self) -> int:
        return len(list_candidates(self.spool.inbox) or [])

    def daemon(self) -> DaemonStatus | None:
        """The status of the spool's daemon if one runs (status.json; no listing)."""
        return live_status(self.spool.state)

    def daemon_runs(self) -> bool:
        """A daemon will run what is queued now. Requests someone waits for are refused at
        once when none does (`unavailable` says why)."""
        return self.unavailable() is None

    def unavailable(self) -> str | None:
        """Why nothing queued now would run: no daemon; the one beside us stopping; or one
        whose heartbeat is stale (stopped with SIGSTOP, frozen). None: one runs and beats."""
        if self.beside is not None and not self.beside():
            return "the voicedrop daemon is stopping"
        status = self.daemon()
        if status is None:  # the one beside us may not have written its status yet
            return None if self.beside else "no voicedrop daemon is running on this spool"
        age = status.heartbeat_age_s()
        if age is not None and age >= STALE_S:
            return f"the voicedrop daemon has not answered for {age:.0f} s (stopped or frozen)"
        return None

    def vram(self) -> dict[str, Any]:
        return vram_view(self.current()[0], self.daemon())

    # ---- dropping jobs -----------------------------------------------------------------------

    def submit(
        self,
        manifest: dict[str, Any],
        reference: bytes | None = None,
        stem: str = "http",
        key: str | None = None,
    ) -> str:
        """Check a manifest (and its uploaded reference) as `voicedrop submit` does, drop it,
        and return the job id; Rejected(422|429) when it would fail or the queue is full.

        `key`: the client's Idempotency-Key. The job is named after it, so a request sent
        again with the same key finds its job (queued, running or finished) and becomes no
        second one."""
        if key is None:
            return self._submit(manifest, reference, stem)
        job_id = "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]
        with self._keys_locked():
            if self.state(job_id) is None:
                return self._submit(manifest, reference, job_id, named=True)
        return job_id

    @contextmanager
    def _keys_locked(self) -> Iterator[None]:
        """One check-and-drop per key at a time, among every HTTP server of the spool."""
        self.spool.ensure()
        fd = os.open(self.spool.ids.folder / ".http-keys.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _submit(
        self, manifest: dict[str, Any], reference: bytes | None, stem: str, *, named: bool = False
    ) -> str:
        settings, jobs = self.current()
        if self.queue_depth() >= settings.http.max_queue:
            raise Rejected(429, [f"the queue is full ({settings.http.max_queue} jobs waiting)"])
        with self._staging() as staging:
            if reference is not None:
                name = self._save_reference(staging, reference, settings)
                manifest = {**manifest, "tts": {**manifest.get("tts", {}), "voice": name}}
            path = staging / f"{stem}.json"
            manifest = {**manifest, "origin": "http"}  # [retention] keeps these for less
            path.write_text(json.dumps(manifest, ensure_ascii=False))
            result = submit(settings, jobs, path, named=named)
        if isinstance(result, list):
            raise Rejected(422, result)
        return result

    def check(self, manifest: dict[str, Any]) -> list[str]:
        """Check a manifest as `submit` does, and drop nothing: its problems, if any."""
        settings, jobs = self.current()
        with self._staging() as staging:
            path = staging / "check.json"
            path.write_text(json.dumps({**manifest, "origin": "http"}, ensure_ascii=False))
            return check_manifest(path, settings, jobs)[1]

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A private folder for one request (client file names are never used as paths)."""
        self.spool.ensure()
        staging = self.spool.incoming / f".http-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _save_reference(staging: Path, data: bytes, settings: Settings) -> str:
        limit, http = settings.limits.max_reference_bytes, settings.http
        if len(data) > limit:
            raise Rejected(413, [f"reference: {len(data)} bytes; the limit is {limit}"])
        raw = staging / "upload"
        raw.write_bytes(data)
        try:
            info = sf.info(str(raw))
        except (RuntimeError, sf.LibsndfileError):
            raise Rejected(422, ["reference: not an audio file soundfile can read"]) from None
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if not http.reference_min_s <= seconds <= http.reference_max_s:
            raise Rejected(
                422,
                [
                    f"reference: {seconds:.1f} s long; it must last "
                    f"{http.reference_min_s:g} to {http.reference_max_s:g} s"
                ],
            )
        name = "reference" + REFERENCE_SUFFIX.get(info.format, ".wav")
        raw.rename(staging / name)
        return name

    # ---- reading jobs -----------------------------------------------------------------------

    def state(self, job_id: str) -> JobState | None:
        return job_state(self.spool, job_id, self.daemon())

    def output(self, job_id: str, name: str | None = None) -> Path | None:
        """A finished job's output file: the first, or the one named in its report."""
        state = self.state(job_id)
        if state is None or state.folder is None or not state.outputs:
            return None
        if name is None:
            name = state.outputs[0]
        return state.folder / name if name in state.outputs else None

    def retry(self, job_id: str) -> str:
        """A failed job dropped again, as it was (its reference recording too): the new
        job's id. Rejected(409) for a job that did not fail or cannot be dropped again."""
        state = self.state(job_id)
        if state is None:
            raise Rejected(404, [f"no job '{job_id}'"])
        if state.status != "failed" or state.folder is None:
            raise Rejected(409, [f"job '{job_id}' is {state.status}: only a failed job is retried"])
        try:
            manifest = json.loads((state.folder / names.MANIFEST).read_text())
            if not isinstance(manifest, dict):
                raise ValueError("not a manifest")
        except (OSError, ValueError, RecursionError):
            raise Rejected(409, [f"job '{job_id}' has no manifest that can be read"]) from None
        if manifest.get("script") is not None:
            raise Rejected(409, ["a script job is retried by dropping it again, with its script"])
        reference = None
        voice = str((manifest.get("tts") or {}).get("voice") or "")
        if voice.lower().endswith(AUDIO_SUFFIXES):
            try:
                reference = (state.folder / names.INPUTS / PurePosixPath(voice).name).read_bytes()
            except OSError:
                raise Rejected(409, [f"job '{job_id}' kept no copy of its reference"]) from None
        manifest.pop("id", None)  # a new job: the client id, if any, is the old one's
        return self.submit(manifest, reference, "retry")

    def sent(self, job_id: str, whole: bool) -> None:
        """A `/v1` response of `job_id` ended, `whole` or cut short by its client going
        away: its audio is not kept unless `[http] keep_sent_audio` (spool/sent.py)."""
        if self.current()[0].http.keep_sent_audio:
            return
        if whole:
            forget_audio(self.spool.outbox / job_id)
        else:
            mark_unheard(self.spool.work, self.spool.outbox, job_id)

    # ---- cancelling -------------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobState:
        """Fail a job that has not started, with code `cancelled`; Rejected(404|409) else."""
        state = self.state(job_id)
        if state is None:
            raise Rejected(404, [f"no job '{job_id}'"])
        if state.status != "queued" or not (self.spool.inbox / f"{job_id}.json").exists():
            raise Rejected(
                409, [f"job '{job_id}' is {state.status}: only a queued job can be cancelled"]
            )
        vram = VramStats.model_validate(self.vram())

        def report(final_id: str) -> str:
            why = "cancelled before it started"
            return unrun_report(final_id, f"{job_id}.json", "cancelled", why, vram).to_json()

        final = self.spool.withdraw(f"{job_id}.json", report)
        if final is None:
            raise Rejected(409, [f"job '{job_id}' has just started: it can no longer be cancelled"])
        limit = self.current()[0].limits.max_manifest_bytes
        private.follow(self.spool.inbox, final, limit)  # the job's alone: kept with it
        done = self.state(final.name)
        assert done is not None
        return done
