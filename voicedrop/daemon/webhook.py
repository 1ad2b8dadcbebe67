"""Told when it is done: each finished job's report POSTed to `[notify] webhook`.

A listener of the job events (listeners.py): when a job ends, its report is written to
`<state>/notify/` and a thread of its own delivers it — the executor never waits on a
network. A delivery is the report as JSON, signed with HMAC-SHA256 of the body under
`[notify] secret` (header `X-Voicedrop-Signature-256: sha256=<hex>`, as GitHub signs its
webhooks), and is retried with backoff (1 s, 2 s, 4 s … at most 5 min) up to
`max_attempts`, each delivery on its own schedule (one the receiver keeps refusing never
holds back the others); a delivery still pending when the daemon stops is sent when it
starts again. A delivery that fails for good is logged, and never fails the job.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import structlog

import voicedrop
from voicedrop.config import Notify
from voicedrop.daemon.listeners import Listener
from voicedrop.fsutil import StateWrites, write_atomic
from voicedrop.report import JobReport

log = structlog.get_logger(__name__)
MAX_DELAY_S = 300.0
SIGNATURE = "X-Voicedrop-Signature-256"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook(Listener):
    def __init__(self, settings: Notify, state_dir: Path) -> None:
        self.settings = settings
        self.folder = state_dir / "notify"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voicedrop-webhook", daemon=True)
        self._writes = StateWrites("webhook deliveries")

    def start(self) -> None:
        if self.settings.webhook is not None:
            self._thread.start()  # deliveries a stopped daemon left are sent first

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join()

    def finished(self, report: JobReport) -> None:
        if self.settings.webhook is None:
            return
        path = self.folder / f"{report.job_id}.json"

        def keep() -> None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, report.to_json(), overwrite=True, durable=False)

        if self._writes.attempt(path, keep):
            self._wake.set()

    def _run(self) -> None:
        retries: dict[Path, _Retry] = {}  # deliveries that failed, and when to try again
        while not self._stop.is_set():
            pending = sorted(self.folder.glob("*.json"), key=_age) if self.folder.is_dir() else []
            retries = {p: retries[p] for p in pending if p in retries}  # gone: nothing to wait for
            for path in pending:
                if self._stop.is_set():
                    return
                retry = retries.pop(path, None)
                if retry is not None and retry.at > time.monotonic():
                    retries[path] = retry  # not yet: the others are not held back by it
                    continue
                later = self._deliver(path, retry)
                if later is not None:
                    retries[path] = later
            soonest = min((r.at for r in retries.values()), default=None)
            self._wake.wait(None if soonest is None else max(0.0, soonest - time.monotonic()))
            self._wake.clear()

    def _deliver(self, path: Path, retry: _Retry | None) -> _Retry | None:
        """One attempt at one delivery; when it failed and is to be tried again, when."""
        try:
            body = path.read_bytes()
        except OSError:
            return None
        attempt = 1 if retry is None else retry.attempt + 1
        error = self._post(body, path.stem, attempt)
        if error is None:
            path.unlink(missing_ok=True)
            log.info("webhook.delivered", job_id=path.stem, attempt=attempt)
            return None
        if attempt >= self.settings.max_attempts:
            log.error("webhook.gave_up", job_id=path.stem, attempts=attempt, error=error)
            path.unlink(missing_ok=True)
            return None
        delay = 1.0 if retry is None else min(retry.delay_s * 2, MAX_DELAY_S)
        log.warning("webhook.retry", job_id=path.stem, error=error, delay_s=delay)
        return _Retry(attempt, time.monotonic() + delay, delay)

    def _post(self, body: bytes, job_id: str, attempt: int) -> str | None:
        """None when delivered (2xx); else why not."""
        assert self.settings.webhook is not None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"voicedrop/{voicedrop.__version__}",
            "X-Voicedrop-Job": job_id,
            "X-Voicedrop-Attempt": str(attempt),
        }
        if self.settings.secret:
            headers[SIGNATURE] = signature(self.settings.secret, body)
        url = self.settings.webhook  # http(s) only: the setting's pattern says so
        request = urllib.request.Request(url, body, headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return str(getattr(exc, "reason", exc))
        return None


@dataclass(frozen=True)
class _Retry:
    attempt: int  # the attempts made so far
    at: float  # monotonic time of the next
    delay_s: float


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
