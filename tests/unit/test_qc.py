"""Takes that are checked: what a take is measured for, a failing clip made again with a
new seed, and the report of every take and which was kept and why."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import drop, hello, read_report, unit_service
from voicedrop.errors import ManifestError
from voicedrop.manifest import Manifest
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.qc import measure, word_error_rate

RATE = 16000


def tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def test_silences_and_clipping_are_measured():
    x = np.concatenate([silence(0.5), tone(1.0), silence(0.3), tone(0.5), silence(0.2)])
    m = measure(Audio(x, RATE))
    assert m.lead_s == pytest.approx(0.5, abs=0.02) and m.trail_s == pytest.approx(0.2, abs=0.02)
    assert m.gap_s == pytest.approx(0.3, abs=0.02) and m.clipped == 0.0
    assert measure(Audio(np.clip(tone(1.0, 3.0), -1, 1), RATE)).clipped > 0.1


def test_the_word_error_rate_ignores_case_and_punctuation():
    assert word_error_rate("Hello, there!", "hello there") == 0.0
    assert word_error_rate("the cat sat", "the hat sat down") == pytest.approx(2 / 3)
    assert word_error_rate("one two", "") == 1.0


class Retaker:
    """Wraps espeak: its first render of each text clips (as a bad take would), and it
    notes the seed each render asked for."""

    seeds = True

    def __init__(self, inner) -> None:
        self.inner, self.asked, self.seen = inner, [], set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def check(self, spec, voice) -> None:
        return None  # takes a seed, as XTTS does

    def stream(self, models, text, request, progress) -> Iterator[Audio]:
        self.asked.append(request.options.get("seed"))
        clean = {**request.options}
        clean.pop("seed", None)
        request = type(request)(request.job_id, request.voice, request.language, clean)
        for piece in self.inner.stream(models, text, request, progress):
            first = text not in self.seen
            yield Audio(np.clip(piece.samples * (40 if first else 1), -1, 1), piece.sample_rate)
        self.seen.add(text)


def test_a_failing_clip_is_made_again_with_a_new_seed_and_the_passing_take_kept(settings):
    service = unit_service(settings)
    engine = Retaker(service.engines.tts["espeak"])
    service.engines.tts["espeak"] = engine
    manifest = hello(text="Hello there.", qc={"takes": 3})
    drop(service.spool.inbox, "a.json", manifest)
    assert service.executor.step().status == "done"
    [record] = read_report(service.spool.outbox / "a")["qc"]
    assert record["kept"] == 2 and record["why"] == "take 2 passed"
    first, second = record["takes"]
    assert not first["passed"] and first["problems"][0].startswith("clipping")
    assert second["passed"] and second["clipped"] == 0.0
    assert engine.asked == [None, 2000]  # take 2: a new seed


def test_when_no_take_passes_the_one_with_the_fewest_problems_is_kept(service):
    drop(service.spool.inbox, "a.json", hello(qc={"takes": 2, "lead_max_s": 0}))
    [record] = read_report(service.spool.outbox / service.executor.step().job_id)["qc"]
    assert [t["take"] for t in record["takes"]] == [1, 2]
    assert record["kept"] == 1 and record["why"].startswith("no take passed")


def test_a_word_error_rate_needs_an_asr_model(service):
    manifest = Manifest.model_validate(hello(qc={"wer_max": 0.2}))
    with pytest.raises(ManifestError) as err:
        service.runner.planner.plan(manifest, None)
    assert err.value.field == "qc.wer_max" and "asr_dir" in err.value.message
