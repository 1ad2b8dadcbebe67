"""Shared fixtures: settings on a temp spool, an executor on fakes, and a thread-leak guard."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from voicedrop import logs
from voicedrop.config import GB, Settings, load_settings
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.service import Service
from voicedrop.spool.inbox import InboxFile
from voicedrop.testing import FakeDevice


def stress(count: int) -> int:
    """A count of the reliability suite (rounds, jobs, examples), times `VOICEDROP_STRESS`.

    1 in `make test`; `benchmarks/stress.py --scale N` runs the same tests N times longer.
    """
    return count * max(1, int(os.environ.get("VOICEDROP_STRESS", "1")))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    """Record what a reliability test did (`figures(jobs=1000, mode="inotify")`): pytest keeps
    them as the test's user properties, and `benchmarks/stress.py` prints them."""

    def record(**numbers: object) -> None:
        request.node.user_properties.extend(numbers.items())

    return record


# No test reaches a model hub (the libraries read this when first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves threads running: every long-lived object must stop/join."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"test leaked threads: {leaked}"


@pytest.fixture(autouse=True)
def quiet_logs():
    logs.configure("json", "warning")


# The seven VRAM stats fields of the original design: written out here, not imported from
# the package, so that a change to the product cannot silently change the contract.
VRAM_KEYS = {
    "available",
    "low_vram_mode",
    "allocated_gb",
    "reserved_gb",
    "free_gb",
    "total_gb",
    "cached_models",
}


def make_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for a service driven in this process: its device (a FakeDevice, mostly) is
    handed to it, so jobs run inline unless a test asks for the device worker."""
    residency = {"worker": "inline", **overrides.pop("residency", {})}
    data: dict[str, Any] = {
        "residency": residency,
        "spool": root / "spool",
        "device": "cpu",
        "watcher": {"stable_delay_s": 0.0},
        "voices": {"narrator": {"engine_voice": "en-us"}},
        "models": {"chipmunk": {"engine": "tape"}},
    }
    data.update(overrides)
    return load_settings(env={}, overrides=data)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


class WatchedIndex(InboxIndex):
    """An inbox index as a watcher that reports every change keeps it: tests that drive
    `step()` with no observer running list the inbox on every look."""

    def files(self) -> list[InboxFile]:
        self.relist()
        return super().files()


def unit_service(settings: Settings, **parts: Any) -> Service:
    """A service for driving `executor.step()` directly (no watcher, no loop)."""
    if settings.residency.worker == "inline":
        parts.setdefault("device", FakeDevice(8 * GB))
    svc = Service(settings, inbox=WatchedIndex(settings.spool / "inbox"), **parts)
    svc.executor.start()
    return svc


@pytest.fixture
def service(settings: Settings) -> Service:
    """A service on a fake 8 GB device; tests drive `service.executor.step()` directly."""
    return unit_service(settings)


def drop(inbox: Path, name: str, data: dict[str, Any] | bytes | str) -> Path:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    if isinstance(data, dict):
        path.write_text(json.dumps(data))
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def hello(**extra: Any) -> dict[str, Any]:
    return {"text": "Hello there.", "tts": {"engine": "espeak", "language": "en"}, **extra}
