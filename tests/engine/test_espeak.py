"""The offline espeak engine makes real speech, not a tone."""

from __future__ import annotations

import numpy as np
import pytest

from voicedrop.config import load_settings
from voicedrop.pipeline.engines.base import EngineContext, TTSRequest, VoiceChoice, synthesize
from voicedrop.pipeline.engines.espeak import EspeakConfig, EspeakEngine
from voicedrop.pipeline.modelspec import CPU


@pytest.fixture(scope="module")
def engine():
    return EspeakEngine(EspeakConfig(), EngineContext.of(load_settings(env={})))


@pytest.fixture(scope="module")
def synth(engine):
    request = TTSRequest("t", VoiceChoice(), "en")
    return {role: s.load(CPU) for role, s in engine.models(request).items()}


def speak(engine, synth, text, language="en", voice=None):
    request = TTSRequest("t", VoiceChoice(engine_voice=voice), language)
    return synthesize(engine, synth, text, request, lambda _m: None)


def frame_db(samples, rate, frame_s=0.02):
    n = int(rate * frame_s)
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def test_duration_grows_with_text_length(engine, synth):
    short = speak(engine, synth, "Hello there.")
    long = speak(engine, synth, "Hello there. " * 4 + "This sentence keeps going for a while.")
    assert short.duration_s > 0.5
    assert long.duration_s > 3 * short.duration_s


def test_spectrum_is_speech_not_a_tone(engine, synth):
    audio = speak(engine, synth, "The quick brown fox jumps over the lazy dog.")
    x = audio.samples
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / audio.sample_rate)
    peak = int(np.argmax(spectrum))
    near_peak = spectrum[max(0, peak - 20) : peak + 20].sum() / spectrum.sum()
    assert near_peak < 0.3, "energy concentrated at one frequency: a tone, not speech"
    # speech has voiced energy below 1 kHz and fricative energy above 3 kHz
    assert spectrum[(freqs > 80) & (freqs < 1000)].sum() / spectrum.sum() > 0.2
    assert spectrum[freqs > 3000].sum() / spectrum.sum() > 0.005
    # words and pauses: the envelope swings by tens of dB
    levels = frame_db(x, audio.sample_rate)
    assert np.percentile(levels, 90) - np.percentile(levels, 10) > 20


def test_portuguese_and_english_differ(engine, synth):
    en = speak(engine, synth, "Olá, bom dia a todos.", "en")
    pt = speak(engine, synth, "Olá, bom dia a todos.", "pt-br")
    assert pt.duration_s > 0.5
    n = min(len(en.samples), len(pt.samples))
    assert len(en.samples) != len(pt.samples) or not np.allclose(en.samples[:n], pt.samples[:n])


def test_voice_variant_changes_the_voice(engine, synth):
    plain = speak(engine, synth, "Testing one two three.", voice="en-us")
    female = speak(engine, synth, "Testing one two three.", voice="en-us+f3")
    n = min(len(plain.samples), len(female.samples))
    assert not np.allclose(plain.samples[:n], female.samples[:n])


def test_regional_tag_falls_back_to_its_language(engine, synth):
    assert speak(engine, synth, "Bom dia.", "pt-PT").duration_s > 0.3


def test_knows_english_and_portuguese(engine):
    assert {"en", "en-us", "pt", "pt-br"} <= engine.voices()
