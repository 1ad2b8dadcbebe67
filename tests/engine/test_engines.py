"""XTTS, F5-TTS and RVC through their real loaders, on tiny random-initialised models."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from voicedrop.manifest import Manifest
from voicedrop.pipeline.engines.base import TTSRequest
from voicedrop.tiny.build import F5_VOICE, RVC_MODEL, XTTS_VOICE
from voicedrop.tiny.xtts import SPEAKER

TEXT = "Hello there. This is a tiny model speaking."
ESPEAK = {"engine": "espeak", "language": "en"}
JOBS = {
    "xtts": ({"tts": {"engine": "xtts", "voice": XTTS_VOICE}}, 24000),
    "f5tts": ({"tts": {"engine": "f5tts", "voice": F5_VOICE}}, 24000),
    "rvc": (
        {"tts": ESPEAK, "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "pm"}},
        40000,
    ),
}


def run(runner, manifest):
    return runner.run({"text": TEXT, **manifest})


def read(runner, outcome):
    """The audio the runner's latest job wrote (its outcome must be that job's)."""
    assert outcome.error is None, outcome.error.message
    [output] = outcome.outputs
    return sf.read(runner.out / f"job{runner.count}" / output.file)


@pytest.mark.parametrize("engine", sorted(JOBS))
def test_each_engine_speaks_through_its_real_loader(make_runner, engine):
    manifest, rate = JOBS[engine]
    runner = make_runner()
    outcome = run(runner, manifest)
    audio, written_rate = read(runner, outcome)
    assert written_rate == rate
    seconds = len(audio) / rate
    assert 0.3 < seconds < 30
    assert np.all(np.isfinite(audio))
    assert np.sqrt(np.mean(audio**2)) > 1e-4, "silent output"
    loads = [e.key for e in outcome.events if e.event == "load"]
    assert loads, "no model went through the residency manager"


def test_f5_loads_its_dit_and_vocoder_as_two_keys(make_runner):
    outcome = run(make_runner(), JOBS["f5tts"][0])
    assert [(e.event, e.key) for e in outcome.events if e.event == "load"] == [
        ("load", "f5tts"),
        ("load", "vocos"),
    ]


def test_xtts_built_in_speaker_and_a_fixed_seed_repeats_itself(make_runner):
    runner = make_runner(voices={"tiny-builtin": {"engine": "xtts", "engine_voice": SPEAKER}})
    builtin = {"tts": {"engine": "xtts", "voice": "tiny-builtin"}}
    first = read(runner, run(runner, builtin))[0]
    again = read(runner, run(runner, builtin))[0]
    np.testing.assert_array_equal(first, again)


def test_xtts_conditioning_latents_are_computed_once_per_reference(make_runner, tiny):
    runner = make_runner()
    cache = runner.settings.state_path / "xtts-latents"
    run(runner, JOBS["xtts"][0])
    [entry] = list(cache.iterdir())
    stamp = entry.stat().st_mtime_ns
    run(runner, JOBS["xtts"][0])
    assert [p.stat().st_mtime_ns for p in cache.iterdir()] == [stamp]
    other = tiny / "voices" / "other.wav"
    audio, rate = sf.read(tiny / "voices" / "reference.wav")
    sf.write(other, audio[::-1], rate)  # different content: a different voice
    runner2 = make_runner(voices={"other": {"engine": "xtts", "reference": "voices/other.wav"}})
    run(runner2, {"tts": {"engine": "xtts", "voice": "other"}})
    assert len(list(cache.iterdir())) == 2  # same state dir: one entry per recording
    other.unlink()


def test_xtts_splits_long_text_into_sentences(make_runner):
    messages = []
    runner = make_runner()
    long_text = " ".join(f"Sentence number {i} is here." for i in range(40))  # > 250 chars
    from voicedrop.manifest import Manifest
    from voicedrop.pipeline.runner import JobInput

    job = JobInput(
        "long",
        Manifest.model_validate({"text": long_text, **JOBS["xtts"][0]}),
        None,
        runner.out / "long",
    )
    outcome = runner.runner.run(job, messages.append)
    assert outcome.error is None
    sentences = [m for m in messages if "sentence" in m]
    assert sentences and sentences[-1].endswith(f"/{len(sentences)}") and len(sentences) >= 4


def test_f5_without_reference_text_names_the_field(make_runner, tiny, tmp_path):
    runner = make_runner(engines={"f5tts": {"asr_dir": None}})  # no local ASR configured
    ref = tmp_path / "ref.wav"
    ref.write_bytes((tiny / "voices" / "reference.wav").read_bytes())
    outcome = runner.run({"text": TEXT, "tts": {"engine": "f5tts", "voice": "ref.wav"}}, ref)
    assert outcome.error is not None and outcome.error.field == "tts.reference_text"
    with_text = runner.run(
        {"text": TEXT, "tts": {"engine": "f5tts", "voice": "ref.wav", "reference_text": "Hi."}},
        ref,
    )
    assert with_text.error is None


@pytest.mark.parametrize("method", ["harvest", "rmvpe"])
def test_rvc_pitch_methods_on_arrays(make_runner, method):
    from infer_rvc_python import root_pipe

    convert = {"engine": "rvc", "model": RVC_MODEL, "method": method}
    runner = make_runner()
    outcome = run(runner, {"tts": ESPEAK, "convert": convert})
    audio, rate = read(runner, outcome)
    assert rate == 40000 and np.sqrt(np.mean(audio**2)) > 1e-4
    assert root_pipe.input_audio_path2wav == {}, "harvest audio left in the library's global"
    if method == "rmvpe":
        assert "rmvpe" in [e.key for e in outcome.events]


def test_rvc_harvest_curves_are_keyed_by_content_and_released_after_use(make_runner, monkeypatch):
    """The library caches harvest's curves (lru_cache, 128 of them) by a key string: an
    id() there let a retried attempt get another audio's curve, and curves piled up."""
    import hashlib

    from infer_rvc_python import root_pipe

    keys: list[str] = []

    class Recording(dict):  # the library's global of audio by key
        def __setitem__(self, key, value):
            keys.append((key, hashlib.sha256(value.tobytes()).hexdigest()))
            super().__setitem__(key, value)

    monkeypatch.setattr(root_pipe, "input_audio_path2wav", Recording())
    runner = make_runner()
    convert = {"engine": "rvc", "model": RVC_MODEL, "method": "harvest"}
    for text in (TEXT, "Something else entirely."):
        assert run(runner, {"text": text, "tts": ESPEAK, "convert": convert}).error is None
        assert root_pipe.cache_harvest_f0.cache_info().currsize == 0, "a curve was kept"
        assert root_pipe.input_audio_path2wav == {}
    assert all(key == digest for key, digest in keys), "a key is not the audio's content"
    assert len(keys) == 2 and keys[0] != keys[1]


def test_rvc_converts_audio_longer_than_one_window(make_runner):
    """Over 41 s the library cuts the audio at quiet points: that path runs too."""
    from voicedrop.manifest import ConvertSpec
    from voicedrop.pipeline.audio import Audio
    from voicedrop.pipeline.engines.base import ConvertRequest

    runner = make_runner()
    engine = runner.runner.engines.convert["rvc"]
    t = np.arange(45 * 16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(
        np.float32
    )
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="pm")
    request = ConvertRequest("long", RVC_MODEL, runner.settings.models[RVC_MODEL], spec)
    with runner.manager.acquire_all(engine.models(request)) as models:
        out = engine.convert(models, Audio(tone, 16000), request)
    assert out.sample_rate == 40000 and abs(out.duration_s - 45) < 0.5


def test_f5_transcribes_a_reference_without_text_with_the_local_asr(make_runner, tiny, tmp_path):
    runner = make_runner(low_vram=True)
    ref = tmp_path / "ref.wav"
    ref.write_bytes((tiny / "voices" / "reference.wav").read_bytes())
    outcome = runner.run({"text": TEXT, "tts": {"engine": "f5tts", "voice": "ref.wav"}}, ref)
    assert outcome.error is None, outcome.error.message
    moves = [(e.event, e.key) for e in outcome.events]
    assert ("load", "asr") in moves and ("demote", "asr") in moves  # its own residency key
    assert runner.manager.resident_keys("device") == set()


@pytest.mark.parametrize(
    "content",
    [b"RIFF\x24\x00\x00\x00WAVEfmt garbage that lies about being a WAV file", b"\x00" * 64],
)
def test_a_reference_that_is_not_audio_fails_naming_the_voice(make_runner, tmp_path, content):
    ref = tmp_path / "ref.wav"
    ref.write_bytes(content)
    outcome = make_runner().run({"text": TEXT, "tts": {"engine": "xtts", "voice": "ref.wav"}}, ref)
    assert outcome.error is not None and outcome.error.field == "tts.voice"
    assert "not readable audio" in outcome.error.message


def hours_of_reference(tiny, target):
    """The tiny voice's recording followed by 3 hours of silence: under 1 MB of FLAC,
    about 700 MB once decoded to float32 (a decompression bomb within the byte limit)."""
    speech, rate = sf.read(tiny / "voices" / "reference.wav", dtype="int16")
    with sf.SoundFile(target, "w", samplerate=rate, channels=1, format="FLAC") as out:
        out.write(speech)
        silence = np.zeros(rate * 600, np.int16)
        for _ in range(18):
            out.write(silence)
    assert target.stat().st_size < 2 * 1024 * 1024
    return rate


def test_a_reference_holding_hours_is_decoded_only_as_far_as_an_engine_reads(tiny, tmp_path):
    import tracemalloc

    from voicedrop.pipeline.engines.common import REFERENCE_READ_S, read_reference
    from voicedrop.pipeline.engines.f5tts_ref import prepare_audio

    ref = tmp_path / "ref.flac"
    rate = hours_of_reference(tiny, ref)
    tracemalloc.start()
    try:
        clip = read_reference(ref, rate)
        prepared = prepare_audio(ref)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clip.samples.size == int(REFERENCE_READ_S * rate)
    assert 0.33 < prepared.seconds <= 12.1
    assert peak < 100 * 1024**2, f"{peak / 1024**2:.0f} MB decoded for one reference"


@pytest.mark.parametrize("engine", ["xtts", "f5tts"])
def test_a_job_whose_reference_holds_hours_of_silence_speaks(make_runner, tiny, tmp_path, engine):
    ref = tmp_path / "ref.flac"
    hours_of_reference(tiny, ref)
    tts = {"engine": engine, "voice": "ref.flac"}
    if engine == "f5tts":
        tts["reference_text"] = "Hello."
    outcome = make_runner().run({"text": TEXT, "tts": tts}, ref)
    assert outcome.error is None, outcome.error.message


@pytest.mark.parametrize("tokens", [None, 8])
def test_xtts_streams_a_sentence_at_a_time_or_within_one(make_runner, tokens):
    """Text over the model's per-language limit (250 characters) is two pieces at least, as
    the library splits it; with stream_tokens its inference_stream cuts each into more."""
    overrides = {"engines": {"xtts": {"stream_tokens": tokens}}} if tokens else {}
    runner = make_runner(**overrides)
    manifest = Manifest.model_validate({"text": TEXT, **JOBS["xtts"][0]})
    plan = runner.runner.planner.plan(manifest, None)
    engine = runner.runner.engines.tts["xtts"]
    request = TTSRequest("stream", plan.voice, "en", {"seed": 3})
    long_text = " ".join([TEXT] * 6)  # 263 characters
    with runner.manager.acquire_all(plan.tts) as models:
        pieces = list(engine.stream(models, long_text, request, lambda _m: None))
    assert len(pieces) >= (3 if tokens else 2)
    assert all(p.sample_rate == 24000 and np.all(np.isfinite(p.samples)) for p in pieces)
    assert sum(p.samples.size for p in pieces) / 24000 > 0.3


def test_qc_transcribes_each_take_with_the_local_asr_through_the_manager(make_runner):
    """The mechanics on the tiny Whisper (its words are noise, so every take fails the word
    error rate): each take transcribed and scored, `takes` renders, the ASR moved by the
    residency manager like any model."""
    runner = make_runner(low_vram=True)
    qc = {"takes": 2, "wer_max": 0.5}
    outcome = runner.run({"text": TEXT, "tts": ESPEAK, "qc": qc})
    assert outcome.error is None, outcome.error.message
    [record] = outcome.qc
    assert [t.take for t in record.takes] == [1, 2]
    assert all(t.wer is not None and t.heard is not None for t in record.takes)
    assert record.why.startswith("no take passed") or record.why.endswith("passed")
    moves = [(e.event, e.key) for e in outcome.events]
    assert {("prefetch", "asr"), ("load", "asr")} & set(moves)  # read ahead while TTS ran
    assert ("demote", "asr") in moves and runner.manager.resident_keys("device") == set()


def test_a_reference_replaced_with_its_size_and_mtime_kept_is_spoken_anew(
    make_runner, tiny_copy, tmp_path
):
    """`cp -p` (as `rsync -a` and `touch -r` leave it): another recording, the same size
    and mtime. Keyed by (path, size, mtime), the clip cache served the old voice's clips
    for the rest of the daemon's life."""
    voice = tiny_copy / "voices" / "mine.wav"
    audio, rate = sf.read(tiny_copy / "voices" / "reference.wav")
    sf.write(voice, audio, rate, subtype="PCM_16")
    runner = make_runner(
        tiny_copy, voices={"mine": {"engine": "xtts", "reference": "voices/mine.wav"}}
    )
    job = {"tts": {"engine": "xtts", "voice": "mine", "options": {"seed": 7}}}
    assert [o.cache for o in run(runner, job).outputs] == ["miss"]
    assert [o.cache for o in run(runner, job).outputs] == ["hit"]
    other = tmp_path / "other.wav"
    sf.write(other, audio[::-1], rate, subtype="PCM_16")  # another voice, the same size
    before = voice.stat()
    subprocess.run(["cp", "-p", str(other), str(voice)], check=True)
    os.utime(voice, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (voice.stat().st_size, voice.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert [o.cache for o in run(runner, job).outputs] == ["miss"]
