"""Takes that are checked: each clip of a job with a `qc` block measured, and made again
while it fails.

A take is measured for what an editor would reject: the words (transcribed by the local
ASR model — a Whisper in the transformers layout, `[qc] asr_dir` or F5-TTS's `asr_dir`,
acquired through the residency manager like any model — and compared with the text as
spoken: the word error rate), clipping, silence before, after and within the speech, and
for a script's cue whether it fits its slot (after `output.fit`'s stretch). A clip that
fails is rendered again, with a new seed where its engines take one (XTTS, F5-TTS, RVC;
espeak makes the same take again), up to `qc.takes` renders; the first take that passes
is kept, else the one with the fewest problems (then the lowest word error rate). The
report lists every take with its figures and says which was kept and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicedrop.config import Settings
from voicedrop.errors import ManifestError
from voicedrop.manifest import QCSpec
from voicedrop.pipeline import audio as au
from voicedrop.pipeline.engines.base import EngineContext, TTSRequest
from voicedrop.pipeline.engines.common import loadable, model_path
from voicedrop.pipeline.modelspec import ModelSpec, Placement
from voicedrop.pipeline.stages import JobContext, Take, TTSStage
from voicedrop.report import QCRecord, TakeScore

FRAME_S = 0.01
SILENT = 10 ** (-40 / 20)  # a 10 ms frame under -40 dBFS RMS is silence
CLIPPED = 0.999  # a sample at full scale
CLIPPED_SHARE = 0.001  # more than 0.1 % of samples at full scale: clipping
SEED_STEP = 1000  # take n renders with `seed` + n x SEED_STEP
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Measures:
    duration_s: float
    clipped: float  # the share of samples at full scale
    lead_s: float
    trail_s: float
    gap_s: float  # the longest silence within the speech


def measure(audio: au.Audio) -> Measures:
    x = audio.samples
    frame = max(1, int(FRAME_S * audio.sample_rate))
    frames = len(x) // frame
    rms = np.sqrt(np.mean(x[: frames * frame].reshape(frames, frame) ** 2, axis=1)) if frames else x
    loud = np.flatnonzero(rms >= SILENT)
    clipped = float(np.mean(np.abs(x) >= CLIPPED)) if x.size else 0.0
    if not loud.size:
        return Measures(audio.duration_s, clipped, audio.duration_s, audio.duration_s, 0.0)
    gaps = np.diff(loud) - 1
    return Measures(
        duration_s=audio.duration_s,
        clipped=clipped,
        lead_s=loud[0] * FRAME_S,
        trail_s=max(0.0, audio.duration_s - (loud[-1] + 1) * FRAME_S),
        gap_s=float(gaps.max(initial=0)) * FRAME_S,
    )


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference's words (case and punctuation aside)."""
    ref, hyp = WORD.findall(reference.lower()), WORD.findall(heard.lower())
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1] / len(ref)


def problems(m: Measures, wer: float | None, spec: QCSpec, slot_s: float | None) -> list[str]:
    said = []
    if spec.wer_max is not None and wer is not None and wer > spec.wer_max:
        said.append(f"word error rate {wer:.2f} over {spec.wer_max:g}")
    if spec.clipping and m.clipped > CLIPPED_SHARE:
        said.append(f"clipping ({m.clipped:.1%} of samples at full scale)")
    for name, value, limit in (
        ("silence before the speech", m.lead_s, spec.lead_max_s),
        ("silence after the speech", m.trail_s, spec.trail_max_s),
        ("a silence within the speech", m.gap_s, spec.gap_max_s),
    ):
        if limit is not None and value > limit:
            said.append(f"{name} {value:.2f} s over {limit:g} s")
    if spec.fit_slot and slot_s is not None and m.duration_s > slot_s + 0.005:
        said.append(f"{m.duration_s:.2f} s in a {slot_s:.2f} s slot")
    return said


def asr_spec(context: EngineContext, directory: Path | None) -> ModelSpec | None:
    """The ASR model, as the residency manager moves it (key `asr`, shared with F5-TTS)."""
    path = model_path(context, "qc.asr_dir", directory)
    if path is None:
        return None

    def load(placement: Placement) -> Any:
        loadable(context, path)
        from voicedrop.pipeline.engines.f5tts_load import AsrModel

        return AsrModel(path, placement)

    return ModelSpec("asr", load, checkpoint=path)


def check_qc(spec: QCSpec | None, asr: ModelSpec | None) -> None:
    if spec is not None and spec.wer_max is not None and asr is None:
        raise ManifestError(
            "qc.wer_max needs a local ASR model: set [qc] asr_dir (or [engines.f5tts] asr_dir)",
            field="qc.wer_max",
        )


def asr_of(settings: Settings) -> ModelSpec | None:
    """The configuration's ASR model: `[qc] asr_dir`, else F5-TTS's `asr_dir`."""
    directory = settings.qc.asr_dir or settings.engines.get("f5tts", {}).get("asr_dir")
    return asr_spec(EngineContext.of(settings), None if directory is None else Path(directory))


class QCStage:
    """After the last audio stage: measure, make the failing clips again, keep the best."""

    name = "qc"

    def engine(self, ctx: JobContext) -> str | None:
        return None

    def models(self, ctx: JobContext) -> Mapping[str, ModelSpec]:
        spec, asr = ctx.manifest.qc, asr_of(ctx.settings)
        return {"asr": asr} if spec and spec.wer_max is not None and asr else {}

    def run(self, ctx: JobContext) -> None:
        spec = ctx.manifest.qc
        assert spec is not None
        texts = dict(ctx.spoken or ctx.manifest.items())
        slots = _slots(ctx)
        scored: list[list[tuple[Take, TakeScore]]] = [[] for _ in ctx.takes]
        current = list(ctx.takes)
        for take_no in range(1, spec.takes + 1):
            todo = [i for i, s in enumerate(scored) if not any(t.passed for _, t in s)]
            if not todo:
                break
            if take_no > 1:
                current = self._again(ctx, todo, take_no, current)
            heard = self._transcribe(ctx, [current[i] for i in todo])
            for i, words in zip(todo, heard, strict=True):
                take = current[i]
                m = measure(take.audio)
                wer = (
                    None if words is None else round(word_error_rate(texts[take.segment], words), 3)
                )
                said = problems(m, wer, spec, slots.get(take.segment))
                scored[i].append((take, _score(take_no, wer, m, said, words)))
        ctx.takes, ctx.qc = [], []
        for takes in scored:
            take, why, kept = _best(takes)
            ctx.takes.append(take)
            ctx.qc.append(QCRecord(segment=take.segment, kept=kept, why=why,
                                   takes=[s for _, s in takes]))  # fmt: skip

    def _transcribe(self, ctx: JobContext, takes: list[Take]) -> list[str | None]:
        models = self.models(ctx)
        if not models:
            return [None] * len(takes)
        language = ctx.manifest.tts.language
        with ctx.manager.acquire_all(models) as placed:
            asr = placed["asr"]
            return [asr.transcribe(au.resample(t.audio, 16000), language) for t in takes]

    @staticmethod
    def _again(ctx: JobContext, todo: list[int], take_no: int, current: list[Take]) -> list[Take]:
        """Render the clips of `todo` again, with a new seed where the engines take one."""
        ctx.progress(f"qc: take {take_no} of {len(todo)} clip(s)")
        engine = ctx.engines.tts[ctx.manifest.tts.engine]
        base = ctx.tts_request()
        options = dict(base.options)
        if getattr(engine, "seeds", False):
            options["seed"] = int(options.get("seed", 0)) + take_no * SEED_STEP
        request = TTSRequest(base.job_id, base.voice, base.language, options, base.segments)
        items = dict(ctx.spoken or ctx.manifest.items())
        again = list(current)
        with ctx.manager.acquire_all(engine.models(request)) as models:
            for i in todo:
                segment = current[i].segment
                audio = TTSStage.say(ctx, engine, models, items[segment], None, request)
                again[i] = Take(segment, audio)
        if ctx.manifest.convert is not None:
            again = _convert_again(ctx, todo, take_no, again)
        return again


def _convert_again(ctx: JobContext, todo: list[int], take_no: int, takes: list[Take]) -> list[Take]:
    request = ctx.convert_request()
    engine = ctx.engines.convert[request.spec.engine]
    if getattr(engine, "seeds", False):
        seed = int(request.spec.options.get("seed", 0)) + take_no * SEED_STEP
        spec = request.spec.model_copy(update={"options": {**request.spec.options, "seed": seed}})
        request = type(request)(request.job_id, request.name, request.model, spec)
    out = list(takes)
    with ctx.manager.acquire_all(engine.models(request)) as models:
        for i in todo:
            out[i] = Take(takes[i].segment, engine.convert(models, takes[i].audio, request))
    return out


def _slots(ctx: JobContext) -> dict[str, float]:
    """Each cue's room: its slot, times the stretch `output.fit` may apply."""
    script = ctx.script
    if script is None or not script.timed:
        return {}
    stretch = ctx.settings.limits.max_stretch if ctx.manifest.output.fit else 1.0
    return {c.id: c.slot_s * stretch for c in script.cues}


def _score(take_no: int, wer: float | None, m: Measures, said: list[str], heard: str | None
           ) -> TakeScore:  # fmt: skip
    return TakeScore(
        take=take_no,
        passed=not said,
        problems=said,
        wer=wer,
        heard=heard,
        duration_s=round(m.duration_s, 3),
        clipped=round(m.clipped, 5),
        lead_s=round(m.lead_s, 3),
        trail_s=round(m.trail_s, 3),
        gap_s=round(m.gap_s, 3),
    )


def _best(takes: list[tuple[Take, TakeScore]]) -> tuple[Take, str, int]:
    for take, score in takes:
        if score.passed:
            return take, f"take {score.take} passed", score.take
    take, score = min(takes, key=lambda ts: (len(ts[1].problems), ts[1].wer or 0.0, ts[1].take))
    return take, f"no take passed: take {score.take} had the fewest problems", score.take
