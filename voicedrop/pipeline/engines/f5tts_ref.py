"""F5-TTS's reference recording and text, prepared as the library's public path does it.

`f5_tts.infer.utils_infer.preprocess_ref_audio_text` clips a reference to at most 12 s at
its silences, trims silence from both ends, adds 50 ms of silence, and ends the text with
". "; `infer_process` then sizes the text batches from the prepared recording. The
output's length follows from all of it, so voicedrop does the same steps with the same
pydub functions and parameters — on the samples soundfile decoded, without the
library's temporary files, its module-level caches or ffmpeg. The recording then goes to
`infer_batch_process` at its own rate, which makes it mono, normalises its loudness and
resamples it with torchaudio, as for the library's own callers.

Deviations, each for a reason: any format libsndfile reads is decoded by soundfile (the
library hands non-WAV files to ffmpeg, which the daemon does not need), to 16-bit samples
as the library's WAV export holds them; only the recording's first two minutes are
decoded (`common.REFERENCE_READ_S`: the 12 s clip is made from its first pieces, and a
compressed file may hold hours); a batch size the library's formula makes zero or
negative (a reference near 22 s, impossible after the 12 s clip) is one character.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicedrop.errors import ManifestError
from voicedrop.pipeline.engines.common import decode_reference

CLIP_MS = 12000


@dataclass(frozen=True)
class Reference:
    samples: np.ndarray[Any, np.dtype[np.float32]]  # (channels, frames), as torchaudio.load
    rate: int

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[-1]) / self.rate

    def mono(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        return np.asarray(self.samples.mean(axis=0), dtype=np.float32)


def prepare_audio(path: Path) -> Reference:
    """The library's clipping and trimming of a reference (preprocess_ref_audio_text)."""
    from pydub import AudioSegment, silence

    data, rate = decode_reference(path, "int16")  # its first REFERENCE_READ_S seconds
    segment = AudioSegment(
        data=np.ascontiguousarray(data).tobytes(),
        sample_width=2,
        frame_rate=int(rate),
        channels=data.shape[1],
    )
    clipped = _clip(segment, silence.split_on_silence(
        segment, min_silence_len=1000, silence_thresh=-50, keep_silence=1000, seek_step=10
    ))  # fmt: skip
    if len(clipped) > CLIP_MS:  # no long silence to clip at: try short ones
        clipped = _clip(segment, silence.split_on_silence(
            segment, min_silence_len=100, silence_thresh=-40, keep_silence=1000, seek_step=10
        ))  # fmt: skip
    if len(clipped) > CLIP_MS:
        clipped = clipped[:CLIP_MS]
    prepared = _trim_edges(clipped, silence) + AudioSegment.silent(duration=50)
    frames = np.frombuffer(prepared.raw_data, dtype=np.int16).reshape(-1, prepared.channels)
    samples = (frames.T.astype(np.float32) / 32768.0).astype(np.float32)
    if samples.shape[-1] < prepared.frame_rate // 3:
        raise ManifestError(
            f"reference {path.name} is too short once its silence is trimmed "
            f"({samples.shape[-1] / prepared.frame_rate:.2f} s; at least 0.33 s)",
            field="tts.voice",
        )
    return Reference(samples, int(prepared.frame_rate))


def _clip(segment: Any, pieces: list[Any]) -> Any:
    from pydub import AudioSegment

    out = AudioSegment.silent(duration=0)
    for piece in pieces:
        if len(out) > 6000 and len(out + piece) > CLIP_MS:
            break
        out += piece
    return out


def _trim_edges(segment: Any, silence: Any, threshold: float = -42) -> Any:
    """utils_infer.remove_silence_edges."""
    start = silence.detect_leading_silence(segment, silence_threshold=threshold)
    segment = segment[start:]
    end = silence.detect_leading_silence(segment.reverse(), silence_threshold=threshold)
    return segment[: len(segment) - end] if end > 0 else segment


def prepare_text(text: str) -> str:
    """The reference text ends with '. ' (or '。'), as preprocess_ref_audio_text makes it."""
    if text.endswith(". ") or text.endswith("。"):
        return text
    return text + (" " if text.endswith(".") else ". ")


def batch_chars(reference: Reference, ref_text: str, speed: float) -> int:
    """infer_process's text batch size, from the prepared reference and text."""
    seconds = reference.seconds
    return max(1, int(len(ref_text.encode("utf-8")) / seconds * (22 - seconds) * speed))
