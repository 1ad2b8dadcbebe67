"""Choosing the device caps oneDNN's kernel cache, which otherwise grows a long-running
daemon's memory by a kernel per input length, and leaves a user's own size alone."""

from __future__ import annotations

import os

import pytest

from voicedrop.pipeline.device import CPUDevice
from voicedrop.pipeline.device_choice import KERNEL_CACHE_ENTRIES, KERNEL_CACHE_ENV, make_device


def test_the_daemon_caps_the_kernel_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_CACHE_ENV, "unset")  # so that the test's end restores the real state
    monkeypatch.delenv(KERNEL_CACHE_ENV)
    assert isinstance(make_device("cpu"), CPUDevice)
    assert os.environ[KERNEL_CACHE_ENV] == str(KERNEL_CACHE_ENTRIES)


def test_a_size_the_user_chose_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_CACHE_ENV, "256")
    make_device("auto")
    assert os.environ[KERNEL_CACHE_ENV] == "256"
