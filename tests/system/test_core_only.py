"""The core install (no extras: no torch, no yaml, no engine libraries) runs the daemon.

The test environment has every extra installed, so a meta-path finder placed in front of
the others makes those packages unimportable in the child process, as on a core install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
BLOCKED = (
    "torch", "torchaudio", "yaml", "TTS", "f5_tts", "vocos", "infer_rvc_python", "faiss",
    "transformers", "safetensors", "huggingface_hub", "pyworld", "ray",
)  # fmt: skip
BLOCKER = f"""
import sys
BLOCKED = {BLOCKED!r}
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: core install)")
        return None
sys.meta_path.insert(0, Blocker())
"""


def test_sample_inbox_runs_on_a_core_install(tmp_path: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    for sample in (ROOT / "sample_inbox").glob("*.json"):
        (spool / "inbox" / sample.name).write_bytes(sample.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICEDROP_", "LOW_VRAM"))}
    env.update(PYTHONPATH=f"{tmp_path / 'site'}:{ROOT}", VOICEDROP_SPOOL=str(spool))
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker works
    result = subprocess.run(
        [sys.executable, "-m", "voicedrop", "--config", str(ROOT / "config.toml"), "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((spool / "outbox").iterdir())) == 4
    assert [p.name for p in (spool / "failed").iterdir()] == ["bad-unknown-voice"]
    status = subprocess.run(
        [sys.executable, "-m", "voicedrop", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and '"available": false' in status.stdout
