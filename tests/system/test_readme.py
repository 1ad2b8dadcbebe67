"""The README's first two sections, pasted in order into one shell as a new user does: the
drop folder's daemon left running, then the HTTP section. It stopped with exit 4 (a
second daemon on the same state), advising the wrong fix, and `curl -o hello.wav` saved
a JSON error as hello.wav with exit 0."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    """The first ```sh block under the README's `## title`."""
    text = (ROOT / "README.md").read_text()
    after = text.split(f"## {title}\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, f"no sh block under {title}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_http_section_works_pasted_after_the_drop_folder_one(tmp_path):
    if not (ROOT / ".venv" / "bin" / "voicedrop").exists():
        pytest.skip("the README's commands run .venv/bin/voicedrop: make it first")
    work = tmp_path / "checkout"
    work.mkdir()
    for name in (".venv", "config.toml"):
        (work / name).symlink_to(ROOT / name)
    port = str(free_port())
    drop = section("One job through the drop folder").replace("/tmp/", f"{tmp_path}/")
    http = section("One job through HTTP").replace("8000", port)
    script = "\n".join([
        drop,
        "until [ -e spool/outbox/hello/report.json ]; do sleep 0.1; done",  # the job, done
        "set -e",
        http,
        "kill %%; wait",  # the HTTP daemon: the test's own tidying
    ])  # fmt: skip
    shell = subprocess.Popen(
        ["bash", "-c", script], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _out, err = shell.communicate(timeout=180)
    finally:  # whatever the script left running (a daemon it started) goes with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    assert shell.returncode == 0, err[-2000:]
    assert sf.info(str(work / "hello.wav")).frames > 0
    assert (work / "hello.mp3").stat().st_size > 0
    assert "another voicedrop daemon" not in err
