"""The post stage: resample, reach the loudness target, encode, name and write each clip;
measure what was written; for a script job, the dub track and what an editor takes with
it (the subtitles as spoken, a cue sheet: deliverables.py). Between two clips it steps
aside for a job of a higher priority, as the TTS stage does between two segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from voicedrop.codecs import codec_rate
from voicedrop.pipeline import audio as au
from voicedrop.pipeline.deliverables import Spoken, bext_chunk, cue_sheet, file_stem, subtitles
from voicedrop.pipeline.longtrack import write_blocks
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.stages import JobContext, Paused
from voicedrop.report import OutputRecord, ScriptRecord

if TYPE_CHECKING:
    from voicedrop.pipeline.dub import Dub

# Plain text (and a manifest's segments) has no times: its clips are placed one after
# another on the timeline, this far apart (the bext time reference an NLE places them by).
PARAGRAPH_GAP_S = 0.5


class PostStage:
    name = "post"

    def engine(self, ctx: JobContext) -> str | None:
        return None

    def models(self, ctx: JobContext) -> Mapping[str, ModelSpec]:
        return {}

    def run(self, ctx: JobContext) -> None:
        out = ctx.manifest.output
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        ctx.outputs = []
        when = datetime.now(UTC)
        texts = dict(ctx.spoken or ctx.manifest.items())
        script = ctx.script
        timed = {c.id: c for c in script.cues} if script and script.timed else {}
        starts = {key: cue.start_s for key, cue in timed.items()}
        stretches: list[float] = []
        after = 0.0  # untimed (paragraphs, segments): each after the one before, and a gap
        written: list[au.Audio] = []
        for i, take in enumerate(ctx.takes):
            ctx.progress(f"post {i + 1}/{len(ctx.takes)}")
            if i and ctx.manifest.qc is None and ctx.preempt():
                # what every earlier stage made is kept; this stage begins again on return
                # (a qc block's choices are not kept: such a job finishes here in one go)
                raise Paused([replace(t, done=True) for t in ctx.takes], len(ctx.takes))
            rate = codec_rate(out.format, out.sample_rate or take.audio.sample_rate)
            audio = au.resample(take.audio, rate)
            if out.fit and take.segment in timed:  # the clip itself: every deliverable agrees
                from voicedrop.pipeline.dub import fitted

                audio, stretch = fitted(
                    audio, timed[take.segment].slot_s, ctx.settings.limits.max_stretch
                )
                stretches.append(stretch)
            if out.loudness_lufs is not None:
                audio = au.normalize_loudness(audio, out.loudness_lufs)
            chunk = None
            if out.bext:
                at = starts.get(take.segment, after)
                chunk = bext_chunk(texts.get(take.segment, ""), ctx.job_id, round(at * rate), when)
            after += audio.duration_s + PARAGRAPH_GAP_S
            self._write(ctx, audio, self._stem(ctx, take.segment, when), take.segment,
                        take.cache, chunk)  # fmt: skip
            written.append(audio)
        if ctx.script is not None and ctx.script.timed:
            self._dub(ctx, written, stretches)

    @staticmethod
    def _stem(ctx: JobContext, segment: str, when: datetime) -> str:
        out, manifest = ctx.manifest.output, ctx.manifest
        if out.template is None:
            return out.name if manifest.segments is None else f"{out.name}-{segment}"
        cue = segment.removeprefix("cue").removeprefix("para") if ctx.script else segment
        return file_stem(
            out.template,
            job=ctx.job_id,
            segment=segment,
            cue=cue,
            voice=manifest.tts.voice or manifest.tts.engine,
            take=_kept(ctx).get(segment, 1),
            date=when.strftime("%Y-%m-%d"),
        )

    @staticmethod
    def _write(
        ctx: JobContext,
        audio: au.Audio,
        stem: str,
        segment: str,
        cache: Literal["hit", "miss"] | None = None,
        chunk: bytes | None = None,
    ) -> None:
        out = ctx.manifest.output
        path = ctx.out_dir / f"{stem}.{out.format}"
        path.unlink(missing_ok=True)  # a retried attempt replaces its own partial output
        au.write_audio(audio, path, out.format, out.bit_depth, chunk)
        ctx.outputs.append(
            OutputRecord(
                file=path.name,
                segment=segment,
                format=out.format,
                sample_rate=audio.sample_rate,
                duration_s=round(audio.duration_s, 3),
                peak_dbfs=au.peak_dbfs(audio),
                loudness_lufs=au.loudness_lufs(audio),
                cache=cache,
            )
        )

    @staticmethod
    def _write_dub(ctx: JobContext, dub: Dub, stem: str) -> None:
        """The dub track, block by block into its file, in bounded memory."""
        out = ctx.manifest.output
        path = ctx.out_dir / f"{stem}.{out.format}"
        path.unlink(missing_ok=True)  # a retried attempt replaces its own partial output
        written = write_blocks(path, out.format, dub.sample_rate, dub.blocks(), out.bit_depth)
        ctx.outputs.append(
            OutputRecord(
                file=path.name,
                segment="dub",
                format=out.format,
                sample_rate=dub.sample_rate,
                duration_s=round(written.duration_s, 3),
                peak_dbfs=written.peak_dbfs,
                loudness_lufs=written.loudness_lufs,
            )
        )

    @staticmethod
    def _dub(ctx: JobContext, clips: list[au.Audio], stretches: list[float]) -> None:
        """The dub track: every cue's clip at its start time; overruns reported; the
        subtitles as spoken and the cue sheet beside it."""
        from voicedrop.pipeline.dub import dub_track

        script, out = ctx.script, ctx.manifest.output
        assert script is not None
        ctx.progress("post: dub track")
        files = [o.file for o in ctx.outputs]
        dub = dub_track(list(zip(script.cues, clips, strict=True)), script.end_s, stretches)
        PostStage._write_dub(ctx, dub, f"{out.name}-dub")
        kept = _kept(ctx)
        spoken = [
            Spoken(c.number, c.start_s, c.start_s + length, c.text, file, kept.get(c.id, 1))
            for c, length, file in zip(script.cues, dub.spoken_s, files, strict=True)
        ]
        subtitle_file = f"{out.name}-spoken.{script.kind}"
        sheet_file = f"{out.name}-cues.csv"
        (ctx.out_dir / subtitle_file).write_text(subtitles(spoken, script.kind))
        (ctx.out_dir / sheet_file).write_text(cue_sheet(spoken))
        ctx.script_record = ScriptRecord(
            cues=len(script.cues),
            skipped_cues=script.skipped,
            dub=ctx.outputs[-1].file,
            duration_s=round(dub.duration_s, 3),
            overruns=dub.overruns,
            subtitles=subtitle_file,
            cue_sheet=sheet_file,
            encoding=script.encoding,
        )


def _kept(ctx: JobContext) -> dict[str, int]:
    """Which take of each clip was kept (a `qc` block's choice; else the first)."""
    return {record.segment: record.kept for record in ctx.qc}
