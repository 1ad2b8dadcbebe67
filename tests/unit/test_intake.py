"""Reading a manifest file from a hostile folder: never a hang, never another exception."""

from __future__ import annotations

import json
import os
import socket

import pytest

from voicedrop.config import Limits
from voicedrop.errors import ManifestError
from voicedrop.intake import read_manifest

LIMITS = Limits()
GOOD = {"text": "Hi.", "tts": {"engine": "espeak"}}


def test_a_regular_manifest_is_read(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(GOOD))
    assert read_manifest(path, LIMITS).text == "Hi."


def test_a_fifo_named_like_a_manifest_is_refused_without_waiting_for_a_writer(tmp_path):
    path = tmp_path / "job.json"
    os.mkfifo(path)  # opening it for reading would block until somebody writes
    with pytest.raises(ManifestError, match="a FIFO"):
        read_manifest(path, LIMITS)


def test_a_directory_named_like_a_manifest_is_refused(tmp_path):
    (tmp_path / "job.json").mkdir()
    with pytest.raises(ManifestError, match="a directory"):
        read_manifest(tmp_path / "job.json", LIMITS)


def test_a_socket_named_like_a_manifest_is_refused(tmp_path):
    path = tmp_path / "s.json"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(ManifestError, match="cannot be opened"):
            read_manifest(path, LIMITS)


def test_a_symlink_is_refused_from_the_inbox_but_followed_when_named_by_the_user(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(GOOD))
    link = tmp_path / "job.json"
    link.symlink_to(target)
    with pytest.raises(ManifestError, match="symlink"):
        read_manifest(link, LIMITS)
    assert read_manifest(link, LIMITS, follow_symlinks=True).text == "Hi."


def test_an_oversized_manifest_is_refused_by_its_size_before_reading(tmp_path):
    path = tmp_path / "big.json"
    with path.open("wb") as fh:
        fh.truncate(LIMITS.max_manifest_bytes * 100)  # sparse: nothing would fit in a read
    with pytest.raises(ManifestError, match=f"{LIMITS.max_manifest_bytes * 100} bytes"):
        read_manifest(path, LIMITS)


def test_a_vanished_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot be opened"):
        read_manifest(tmp_path / "gone.json", LIMITS)
