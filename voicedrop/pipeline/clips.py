"""The clip cache: a segment (a script's cue) rendered before is not rendered again.

An editor changes three lines of a 300-line script and drops it again: only those three
are made; the others come from here. A clip is stored as the take the audio stages made
(after TTS and any conversion, before the post stage, which is cheap and runs again), as
a float WAV under `<state>/clips/`, keyed by a SHA-256 of everything that decides it:
the text as spoken (after the lexicon), the engine, its version and its settings, the
language and the job's options, the voice (its configured entry, and the content of its
reference recordings), the content of every model file the engines load (hashed once
per file version), and the conversion (engine, model, pitch, method, options). A change
to any of them is a new key: a stale clip is never served.

Only renders that would come out the same are cached: the engine says so
(`deterministic(request)`): espeak and the offline engines always; XTTS, F5-TTS and RVC
only with a `seed`. The cache has a byte budget (`[cache] clips_gb`): the least recently
used clips go first; and it never takes the last GiB (5 % of a large disk) of its disk.
It survives restarts (and a kill: the half-written clip of a killed daemon is removed when
the next one starts); a clip that cannot be read is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import structlog

import voicedrop
from voicedrop.config import Settings
from voicedrop.fsutil import StateWrites, remove_orphan_temps, write_atomic
from voicedrop.manifest import Manifest
from voicedrop.modelfiles import HashCheck
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines import Engines
from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, VoiceChoice

log = structlog.get_logger(__name__)
SUFFIX = ".wav"
MIN_FREE = 1024**3  # the cache leaves at least this much of its disk free


class ClipCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.hashes = HashCheck()
        self._writes = StateWrites("clip cache")
        self._size: int | None = None  # bytes on disk, counted once, then kept
        self._now = 0  # the last use given to a clip (ns)
        self._said_full = False
        self.remove_orphans()

    def remove_orphans(self) -> int:
        """Temp files of writers killed mid-write (a daemon, or its device worker, which
        may die a moment after the next daemon started), out of the budget's sight."""
        orphans = remove_orphan_temps(self.folder.glob("*/.*.tmp"))
        if orphans:
            log.info("clips.orphans_removed", files=orphans)
        return orphans

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def key(self, parts: dict[str, Any], files: Iterable[Path]) -> str:
        """The key of a clip: `parts` (JSON-able), and the content of `files`."""
        contents = sorted(f"{p}={self.hashes.digest(p)}" for p in files if p.is_file())
        body = json.dumps(
            {"voicedrop": voicedrop.__version__, **parts, "files": contents},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str) -> Audio | None:
        path = self._path(key)
        try:
            samples, rate = sf.read(str(path), dtype="float32")
            self._touch(path)  # used now: the last to go
        except (OSError, RuntimeError, sf.LibsndfileError):
            return None
        return Audio(np.asarray(samples, dtype=np.float32), int(rate))

    def put(self, key: str, audio: Audio) -> None:
        """Keep a clip, unless one is kept under its key already (a full disk only means it
        is made again next time). The cache never
        takes the last GiB of its disk (5 % of a large one, up to 5 GiB): outputs and the
        spool come first."""
        path = self._path(key)
        if path.exists():  # the first write wins: a line said twice, or made again, is
            self._touch(path)  # heard as it was first kept (an engine may differ by a bit)
            return
        if not self._room(audio.samples.nbytes):
            return

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            data = _wav(audio)
            write_atomic(path, data, overwrite=True, durable=False)
            self._touch(path)
            self._size = (self._size if self._size is not None else self._measure()) + len(data)

        written = self._writes.attempt(path, write)
        if written and self._size is not None and self._size > self.max_bytes:
            self._evict()

    def _room(self, nbytes: int) -> bool:
        where = self.folder
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            usage = shutil.disk_usage(where)
        except OSError:
            return False
        room = usage.free - nbytes >= max(MIN_FREE, min(usage.total // 20, 5 * MIN_FREE))
        if not room and not self._said_full:
            log.info("clips.not_kept", reason="its disk is nearly full", free=usage.free)
        self._said_full = not room
        return room

    def _touch(self, path: Path) -> None:
        """Mark a clip used now; times strictly increase (a filesystem's clock ticks
        coarser than clips are used), so the least recently used is known exactly."""
        self._now = max(time.time_ns(), self._now + 1)
        os.utime(path, ns=(self._now, self._now))

    def _measure(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob(f"*{SUFFIX}"))

    def _evict(self) -> None:
        """Least recently used out, to 90 % of the budget."""
        stats = [(p, p.stat()) for p in self.folder.rglob(f"*{SUFFIX}")]
        files = sorted((st.st_mtime_ns, st.st_size, p) for p, st in stats)
        size = sum(s for _, s, _ in files)
        gone = 0
        for _, nbytes, path in files:
            if size <= self.max_bytes * 0.9:
                break
            path.unlink(missing_ok=True)
            size -= nbytes
            gone += 1
        self._size = size
        log.info("clips.evicted", clips=gone, bytes=size)


def _wav(audio: Audio) -> bytes:
    import io

    out = io.BytesIO()
    sf.write(out, audio.samples, audio.sample_rate, format="WAV", subtype="FLOAT")
    return out.getvalue()


def clip_keys(
    cache: ClipCache,
    settings: Settings,
    engines: Engines,
    manifest: Manifest,
    voice: VoiceChoice,
    spoken: list[tuple[str, str]],
) -> list[str | None]:
    """Each segment's key, or None for every one when the job's renders are not cached
    (an engine that would not make the same audio again, or the cache off)."""
    tts = manifest.tts
    engine = engines.tts[tts.engine]
    request = TTSRequest("key", voice, tts.language, tts.options)
    if not cache.enabled or manifest.qc is not None or not engine.deterministic(request):
        return [None] * len(spoken)
    parts: dict[str, Any] = {
        "tts": {
            "engine": tts.engine,
            "version": engine.version(),
            "settings": settings.engines.get(tts.engine, {}),
            "language": tts.language,
            "options": tts.options,
            "voice": [voice.name, voice.engine_voice, voice.reference_text],
        },
    }
    files = [f.path for f in engine.files()] + list(voice.references)
    if manifest.convert is not None:
        spec = manifest.convert
        model = settings.models[spec.model]
        convert = engines.convert[spec.engine]
        if not convert.deterministic(ConvertRequest("key", spec.model, model, spec)):
            return [None] * len(spoken)
        parts["convert"] = {
            "spec": spec.model_dump(mode="json"),
            "model": model.model_dump(mode="json"),
            "version": convert.version(),
            "settings": settings.engines.get(spec.engine, {}),
        }
        files += [f.path for f in convert.files()]
    return [cache.key({**parts, "text": text}, files) for _, text in spoken]
