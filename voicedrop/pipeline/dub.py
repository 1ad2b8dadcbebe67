"""A script job's dub track: each cue's clip placed at the cue's start time (written to
its file block by block: longtrack.py).

A clip longer than its cue's slot may be time-stretched to fit (`output.fit`, pitch kept,
at most `limits.max_stretch` times faster, with librosa's phase vocoder) — the clip
itself, before it is written (`fitted`); what still does not fit is listed as an overrun
and runs on into the silence after it (overlapping speech is summed, then limited to full
scale).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from voicedrop.errors import EngineUnavailableError
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.longtrack import placed_blocks
from voicedrop.report import Overrun
from voicedrop.script import Cue

TOLERANCE_S = 0.005


@dataclass(frozen=True)
class Dub:
    placed: list[tuple[int, np.ndarray]]  # each clip (after any stretch) at its start sample
    length: int  # samples: as long as the script, or longer where the last clip runs on
    sample_rate: int
    overruns: list[Overrun]  # the cues whose speech overran their slot
    spoken_s: list[float]  # how long each clip lasts in the track (after any stretch)

    @property
    def duration_s(self) -> float:
        return self.length / self.sample_rate

    def blocks(self) -> Iterator[np.ndarray]:
        """The track, block by block (never whole: it may be hours long)."""
        return placed_blocks(self.placed, self.length)


def fitted(audio: Audio, slot_s: float, max_stretch: float) -> tuple[Audio, float]:
    """A clip longer than its cue's slot, time-stretched toward it (pitch kept, at most
    `max_stretch` times faster), and the ratio used (1.0: it fit). Applied to the clip
    itself, so its file, the dub track, the subtitles as spoken and the cue sheet all say
    the same length."""
    if audio.duration_s <= slot_s + TOLERANCE_S:
        return audio, 1.0
    stretch = min(audio.duration_s / slot_s, max_stretch)
    return Audio(_time_stretch(audio.samples, stretch), audio.sample_rate), stretch


def dub_track(
    clips: list[tuple[Cue, Audio]], end_s: float, stretches: list[float] | None = None
) -> Dub:
    """The dub track of `clips` (fitted already, if at all: `stretches`, each clip's ratio),
    which all share one sample rate."""
    rate = clips[0][1].sample_rate
    placed: list[tuple[int, np.ndarray]] = []
    overruns: list[Overrun] = []
    for i, (cue, audio) in enumerate(clips):
        assert audio.sample_rate == rate
        samples, stretch = audio.samples, stretches[i] if stretches else 1.0
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
    spoken = [len(samples) / rate for _, samples in placed]
    return Dub(placed, length, rate, overruns, spoken)


def _time_stretch(samples: np.ndarray, ratio: float) -> np.ndarray:
    try:
        import librosa
    except ImportError:
        raise EngineUnavailableError(
            "output.fit needs librosa (installed with the rvc extra, or pip install librosa)",
            field="output.fit",
        ) from None
    return np.asarray(librosa.effects.time_stretch(samples, rate=ratio), dtype=np.float32)
