"""The shipped units verify and are hardened: `systemd-analyze security` scores each at most 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def offline_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with its commands pointed at a binary that exists here, as verify needs."""
    text = unit.read_text()
    text = re.sub(r"(?m)^ExecStart=.+$", "ExecStart=/usr/bin/true", text)  # not a reset
    text = re.sub(r"(?m)^ExecReload=.*$", "ExecReload=/usr/bin/true", text)
    copy = tmp_path / "voicedrop.service"
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("name", ["voicedrop.service", "voicedrop-user.service", "+http"])
def test_unit_is_hardened_and_verifies(name: str, tmp_path: Path):
    """ "+http": the system unit with the HTTP drop-in (systemd/voicedrop-http.conf) merged
    in, as systemd reads it: loopback TCP only, the rest as hardened."""
    if name == "+http":
        unit = offline_copy(ROOT / "systemd" / "voicedrop.service", tmp_path)
        drop_in = (ROOT / "systemd" / "voicedrop-http.conf").read_text()
        assert "IPAddressAllow=localhost" in drop_in and "--http 127.0.0.1:" in drop_in
        unit.write_text(unit.read_text() + "\n" + drop_in)
        unit = offline_copy(unit, tmp_path)
    else:
        unit = offline_copy(ROOT / "systemd" / name, tmp_path)
    assert "Type=notify" in unit.read_text() and "ExecReload=" in unit.read_text()
    security = subprocess.run(
        [str(ANALYZE), "security", "--offline=yes", unit.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for voicedrop.service: ([0-9.]+)", security.stdout)
    assert score is not None, security.stdout[-2000:] + security.stderr[-2000:]
    assert float(score.group(1)) <= 2.0, security.stdout
    verify = subprocess.run(
        [str(ANALYZE), "verify", unit.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if line.strip() and not re.search(r"User=|Group=|unknown user|not found", line)
    ]
    assert problems == []
