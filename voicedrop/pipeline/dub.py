"""A script job's dub track: each cue's clip placed at the cue's start time.

A clip longer than its cue's slot may be time-stretched to fit (`output.fit`, pitch kept,
at most `limits.max_stretch` times faster, with librosa's phase vocoder); what still does
not fit is listed as an overrun and runs on into the silence after it (overlapping
speech is summed, then limited to full scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voicedrop.errors import EngineUnavailableError
from voicedrop.pipeline.audio import Audio
from voicedrop.report import Overrun
from voicedrop.script import Cue

TOLERANCE_S = 0.005


@dataclass(frozen=True)
class Dub:
    track: Audio  # as long as the script, or longer where the last clip runs on
    overruns: list[Overrun]  # the cues whose speech overran their slot
    spoken_s: list[float]  # how long each clip lasts in the track (after any stretch)


def dub_track(
    clips: list[tuple[Cue, Audio]], end_s: float, *, fit: bool, max_stretch: float
) -> Dub:
    """The dub track of `clips`, which all share one sample rate."""
    rate = clips[0][1].sample_rate
    placed: list[tuple[int, np.ndarray]] = []
    overruns: list[Overrun] = []
    for cue, audio in clips:
        assert audio.sample_rate == rate
        samples, stretch = audio.samples, 1.0
        if fit and audio.duration_s > cue.slot_s + TOLERANCE_S:
            stretch = min(audio.duration_s / cue.slot_s, max_stretch)
            samples = _time_stretch(samples, stretch)
        speech_s = len(samples) / rate
        if speech_s > cue.slot_s + TOLERANCE_S:
            overruns.append(
                Overrun(
                    cue=cue.number,
                    start_s=round(cue.start_s, 3),
                    slot_s=round(cue.slot_s, 3),
                    speech_s=round(speech_s, 3),
                    over_s=round(speech_s - cue.slot_s, 3),
                    stretch=round(stretch, 3),
                )
            )
        placed.append((round(cue.start_s * rate), samples))
    length = max(round(end_s * rate), *(start + len(s) for start, s in placed))
    track = np.zeros(length, np.float32)
    for start, samples in placed:
        track[start : start + len(samples)] += samples
    spoken = [len(samples) / rate for _, samples in placed]
    np.clip(track, -1.0, 1.0, out=track)  # in place: a long track is not held twice
    return Dub(Audio(track, rate), overruns, spoken)


def _time_stretch(samples: np.ndarray, ratio: float) -> np.ndarray:
    try:
        import librosa
    except ImportError:
        raise EngineUnavailableError(
            "output.fit needs librosa (installed with the rvc extra, or pip install librosa)",
            field="output.fit",
        ) from None
    return np.asarray(librosa.effects.time_stretch(samples, rate=ratio), dtype=np.float32)
