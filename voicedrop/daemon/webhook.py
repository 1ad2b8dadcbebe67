"""Told when it is done: each finished job's report POSTed to `[notify] webhook`.

A listener of the job events (listeners.py): when a job ends, its report is written to
`<state>/notify/` and a thread of its own delivers it — the executor never waits on a
network. A delivery is the report as JSON, signed with HMAC-SHA256 of the body under
`[notify] secret` (header `X-Voicedrop-Signature-256: sha256=<hex>`, as GitHub signs its
webhooks), and is retried with backoff (1 s, 2 s, 4 s … at most 5 min) up to
`max_attempts`, each delivery on its own schedule (one the receiver keeps refusing never
holds back the others); a delivery still pending when the daemon stops is sent when it
starts again. A delivery that fails for good is logged, and never fails the job.

A delivery has one deadline for all of it (`timeout_s`: connecting, sending, the answer),
never follows a redirect (it would turn the POST into a GET without its body: a failed
delivery, tried again), and reads at most MAX_ANSWER_BYTES of the answer. Whatever goes
wrong with one — a receiver closing mid-answer, one that is not HTTP, a bug — is that
delivery's failure, never the thread's end.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import structlog

import voicedrop
from voicedrop.config import Notify
from voicedrop.daemon.listeners import Listener
from voicedrop.fsutil import StateWrites, write_atomic
from voicedrop.report import JobReport

log = structlog.get_logger(__name__)
MAX_DELAY_S = 300.0
MAX_ANSWER_BYTES = 64 * 1024  # what a receiver's answer may be: the rest is not read
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

    def reconfigure(self, settings: Notify) -> None:
        """A reload: the new URL, secret and limits; deliveries start if newly configured."""
        self.settings = settings
        if settings.webhook is not None and self._thread.ident is None:
            self._thread.start()
        self._wake.set()

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
                try:
                    later = self._deliver(path, retry)
                except Exception:  # a bug: this delivery waits, the thread goes on
                    log.exception("webhook.failed", job_id=path.stem)
                    tried = (retry.attempt if retry else 0) + 1  # its count goes on, not reset
                    later = _Retry(tried, time.monotonic() + MAX_DELAY_S, MAX_DELAY_S)
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
        try:
            status = anyio.run(self._send, body, headers)
        except TimeoutError:
            return f"no answer within {self.settings.timeout_s:g} s (notify.timeout_s)"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # whatever a receiver does: a failed delivery
            return f"{type(exc).__name__}: {exc}"
        if 300 <= status < 400:
            return f"HTTP {status}: a redirect is not followed (set the webhook to its final URL)"
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _send(self, body: bytes, headers: dict[str, str]) -> int:
        """POST once, all of it within the deadline; the answer's status."""
        assert self.settings.webhook is not None  # http(s) only: the setting's pattern says so
        deadline = self.settings.timeout_s
        with anyio.fail_after(deadline):
            async with (
                httpx.AsyncClient(follow_redirects=False, timeout=deadline) as c,
                c.stream("POST", self.settings.webhook, content=body, headers=headers) as answer,
            ):
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
                return answer.status_code


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
