"""`voicedrop models fetch`: the published weights, with the hub libraries' own download code.

The one place voicedrop reaches for a model hub, and only when a user runs it
on a machine with internet. It prints the config to paste. CI cannot
exercise the download (no hub there); it checks that offline it says so.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from voicedrop.errors import ConfigError


@dataclass(frozen=True)
class Download:
    repo: str
    files: tuple[str, ...] | None  # None: the whole repository
    into: str  # sub-directory of the target


SETS: dict[str, tuple[list[Download], str]] = {
    "xtts": (
        [
            Download(
                "coqui/XTTS-v2",
                ("config.json", "model.pth", "vocab.json", "speakers_xtts.pth"),
                "xtts-v2",
            )
        ],
        '[engines.xtts]\nmodel_dir = "{d}/xtts-v2"\n',
    ),
    "f5tts": (
        [
            Download("SWivid/F5-TTS", ("F5TTS_v1_Base/model_1250000.safetensors",), "f5tts"),
            Download(
                "charactr/vocos-mel-24khz", ("config.yaml", "pytorch_model.bin"), "vocos-mel-24khz"
            ),
        ],
        '[engines.f5tts]\ncheckpoint = "{d}/f5tts/F5TTS_v1_Base/model_1250000.safetensors"\n'
        'vocoder_dir = "{d}/vocos-mel-24khz"\n',
    ),
    "rvc-base": (
        [
            Download("r3gm/hubert_base", None, "hubert_base"),
            Download("r3gm/sonitranslate_voice_models", ("rmvpe.pt",), "."),
        ],
        '[engines.rvc]\nhubert_dir = "{d}/hubert_base"\nrmvpe = "{d}/rmvpe.pt"\n',
    ),
}


def fetch(name: str, target: Path) -> str:
    """Download set `name` into `target` (progress bars on stderr); return the config to use.

    A hub that cannot be reached is said in one line, at once (not after the hub
    library's retries), and a failed fetch leaves nothing behind that it made."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ConfigError("HF_HUB_OFFLINE is set: models fetch needs the hub; unset it to download")
    try:
        from huggingface_hub import constants, hf_hub_download, snapshot_download
    except ImportError:
        raise ConfigError(
            "models fetch needs huggingface_hub (installed with any engine extra)"
        ) from None
    reachable(constants.ENDPOINT)
    downloads, snippet = SETS[name]
    made = [p for p in (target, *(target / d.into for d in downloads)) if not p.exists()]
    try:
        for item in downloads:
            where = target / item.into
            where.mkdir(parents=True, exist_ok=True)
            if item.files is None:
                snapshot_download(item.repo, local_dir=str(where))
                continue
            for filename in item.files:
                hf_hub_download(item.repo, filename, local_dir=str(where))
    except Exception as exc:
        for path in reversed(made):  # what this fetch created, and only that
            shutil.rmtree(path, ignore_errors=True)
        for item in downloads:  # the hub library's bookkeeping in a folder that was there
            shutil.rmtree(target / item.into / ".cache" / "huggingface", ignore_errors=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"models fetch {name} failed, nothing kept: {first}") from None
    d = str(target.absolute())
    return f'model_roots = ["{d}"]\n\n' + snippet.format(d=d)


def reachable(endpoint: str, timeout_s: float = 5.0) -> None:
    """A TCP connection to the hub's host, or a ConfigError that says it cannot be had."""
    url = urlsplit(endpoint)
    host, port = url.hostname or endpoint, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the model hub at {endpoint} ({exc.strerror or exc}): "
            "models fetch needs internet; nothing was downloaded"
        ) from None
