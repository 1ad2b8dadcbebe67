"""Told when it is done: each finished job's report POSTed to a loopback receiver, signed,
retried with backoff, kept across a restart — and never a reason for a job to fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
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


class RawReceiver:
    """A loopback server that answers each connection as its script says, below HTTP: a
    receiver that hangs up mid-answer, one that does not speak HTTP, one that dribbles."""

    def __init__(self, answers: list[bytes | str]) -> None:
        self.answers = answers  # bytes: sent, then closed; "dribble": a byte every 0.3 s
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(v for k, v in _headers(head) if k == b"content-length"))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(body)
                answer = self.answers.pop(0) if self.answers else OK
                if answer == "dribble":
                    with suppress(OSError):
                        for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                            if self._stop.wait(0.3):
                                break
                            conn.sendall(bytes([byte]))
                else:
                    assert isinstance(answer, bytes)
                    with suppress(OSError):
                        conn.sendall(answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    return [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(b":") for line in lines)]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
CUT = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it"  # IncompleteRead
NOT_HTTP = b"SSH-2.0-OpenSSH_9.6\r\n"  # BadStatusLine
REDIRECT = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "said"),
    [(CUT, "RemoteProtocolError"), (NOT_HTTP, "RemoteProtocolError"), (REDIRECT, "redirect")],
)
def test_a_receiver_that_misbehaves_fails_that_delivery_and_the_thread_lives_on(
    tmp_path, answer, said
):
    """A hang-up mid-answer or a non-HTTP answer ended the delivery thread for good (every
    later report piled up until a restart); a 302 turned the POST into a body-less GET
    and was logged as delivered. Each is now a failed delivery, tried again."""
    receiver = RawReceiver([answer])
    try:
        service = service_for(tmp_path, receiver.url, max_attempts=3)
        pending = service.spool.state / "notify"
        with capture_logs() as logs, service:
            drop(service.spool.inbox, "a.json", hello())
            assert service.executor.step().status == "done"
            deadline = time.monotonic() + 60
            while len(receiver.requests) < 2 or list(pending.glob("*.json")):  # a: 2nd try
                assert time.monotonic() < deadline, [e["event"] for e in logs]
                time.sleep(0.05)
            drop(service.spool.inbox, "b.json", hello())  # the thread still delivers
            assert service.executor.step().status == "done"
            while len(receiver.requests) < 3 or list(pending.glob("*.json")):
                assert time.monotonic() < deadline, "the second report was never delivered"
                time.sleep(0.05)
    finally:
        receiver.close()
    retries = [e for e in logs if e["event"] == "webhook.retry"]
    assert len(retries) == 1 and said in retries[0]["error"]
    assert not any(e["event"] in ("thread.crashed", "webhook.gave_up") for e in logs)
    jobs = [json.loads(body)["job_id"] for body in receiver.requests]
    assert jobs == ["a", "a", "b"]  # every POST carried its report; a's first was no delivery


def test_a_receiver_that_dribbles_its_answer_is_cut_at_the_total_deadline(tmp_path):
    """`timeout_s` bounds the whole delivery: a byte every 0.3 s kept a per-read timeout
    from ever firing (a receiver held the thread for minutes)."""
    receiver = RawReceiver(["dribble"])
    try:
        service = service_for(tmp_path, receiver.url, max_attempts=2, timeout_s=1.0)
        pending = service.spool.state / "notify"
        with capture_logs() as logs, service:
            drop(service.spool.inbox, "a.json", hello())
            assert service.executor.step().status == "done"
            deadline = time.monotonic() + 60
            while len(receiver.requests) < 2 or list(pending.glob("*.json")):
                assert time.monotonic() < deadline, [e["event"] for e in logs]
                time.sleep(0.05)
    finally:
        receiver.close()
    retry = next(e for e in logs if e["event"] == "webhook.retry")
    assert "no answer within 1 s" in retry["error"]
    assert not any(e["event"] == "webhook.gave_up" for e in logs)  # the second try took it
