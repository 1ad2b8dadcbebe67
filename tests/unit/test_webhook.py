"""Told when it is done: each finished job's report POSTed to a loopback receiver, signed,
retried with backoff, kept across a restart — and never a reason for a job to fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.conftest import drop, hello, make_settings, read_report, unit_service

SECRET = "a-webhook-secret-of-length"


class Receiver:
    """An HTTP server on loopback that answers each POST with the next status given."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.refused: set[str] = set()  # jobs whose deliveries it always answers 500
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if self.headers["X-Voicedrop-Job"] in receiver.refused:
                    status = 500
                receiver.received.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()
                if status < 300:
                    receiver.got.set()

            def log_message(self, *_args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.close()


def service_for(tmp_path: Path, url: str, **notify: object):
    return unit_service(
        make_settings(tmp_path, notify={"webhook": url, "secret": SECRET, **notify})
    )


def test_the_report_is_posted_signed_when_the_job_ends(tmp_path, receiver):
    receiver.statuses[:] = [500, 503]  # the receiver fails twice, then takes it
    service = service_for(tmp_path, receiver.url)
    with service:
        drop(service.spool.inbox, "a.json", hello())
        assert service.executor.step().status == "done"
        assert receiver.got.wait(60), "no delivery"
    headers, body = receiver.received[-1]
    assert len(receiver.received) == 3 and headers["X-Voicedrop-Attempt"] == "3"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Voicedrop-Signature-256"], expected)
    assert json.loads(body) == read_report(service.spool.outbox / "a")
    assert not list((service.spool.state / "notify").glob("*.json"))


def test_a_delivery_that_fails_for_good_never_fails_the_job(tmp_path):
    service = service_for(tmp_path, "http://127.0.0.1:9/nobody", max_attempts=2)
    with capture_logs() as logs, service:
        drop(service.spool.inbox, "a.json", hello())
        assert service.executor.step().status == "done"
        deadline = time.monotonic() + 60
        while not any(e["event"] == "webhook.gave_up" for e in logs):  # after 2 tries
            assert time.monotonic() < deadline, "the delivery never gave up"
            time.sleep(0.05)
    assert read_report(service.spool.outbox / "a")["status"] == "done"
    assert next(e for e in logs if e["event"] == "webhook.gave_up")["attempts"] == 2


def test_a_delivery_pending_at_stop_is_sent_at_the_next_start(tmp_path, receiver):
    settings = make_settings(tmp_path, notify={"webhook": receiver.url, "secret": SECRET})
    first = unit_service(settings)
    drop(first.spool.inbox, "a.json", hello())
    first.executor.step()  # never entered: its delivery thread never ran
    assert list((first.spool.state / "notify").glob("*.json"))
    second = unit_service(settings)
    with second:
        assert receiver.got.wait(60)
    assert json.loads(receiver.received[0][1])["job_id"] == "a"


def test_a_delivery_the_receiver_keeps_refusing_never_holds_back_the_next(tmp_path, receiver):
    """Each delivery keeps its own schedule: `b` is delivered while `a` waits for its
    retries (it used to wait until `a` gave up, minutes later with the default backoff)."""
    receiver.refused.add("a")
    service = service_for(tmp_path, receiver.url, max_attempts=4)
    for name in ("a", "b"):  # both delivery files are there before the thread starts
        drop(service.spool.inbox, f"{name}.json", hello())
        assert service.executor.step().status == "done"
    with capture_logs() as logs, service:
        deadline = time.monotonic() + 60
        while not any(e["event"] == "webhook.gave_up" for e in logs):  # a's fourth refusal
            assert time.monotonic() < deadline, "a's delivery never gave up"
            time.sleep(0.05)
    jobs = [headers["X-Voicedrop-Job"] for headers, _ in receiver.received]
    assert jobs == ["a", "b", "a", "a", "a"], "b waited behind a's retries"


class WaitsSeen(threading.Event):
    """The delivery thread's wake-up, noting how long each wait was to last."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return super().wait(timeout)


def test_a_delivery_removed_while_it_waits_for_its_retry_is_forgotten(tmp_path, receiver):
    """Its retry must not keep the thread awake: it would spin, waiting 0 s for a file
    that is no longer there (a state directory cleared by hand)."""
    receiver.refused.add("a")
    service = service_for(tmp_path, receiver.url, max_attempts=8)  # minutes of retries
    waits = service.webhook._wake = WaitsSeen()
    drop(service.spool.inbox, "a.json", hello())
    assert service.executor.step().status == "done"
    with capture_logs() as logs, service:
        deadline = time.monotonic() + 60
        while not any(e["event"] == "webhook.retry" for e in logs):
            assert time.monotonic() < deadline, "a's delivery was never refused"
            time.sleep(0.05)
        (service.spool.state / "notify" / "a.json").unlink()
        seen = len(waits.timeouts)
        waits.set()  # as a job that ends does
        while None not in waits.timeouts[seen:]:  # idle: waiting for the next job, no timeout
            assert time.monotonic() < deadline, f"still waking: {waits.timeouts[-5:]}"
            time.sleep(0.05)
