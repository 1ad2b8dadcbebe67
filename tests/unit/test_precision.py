"""Each engine library's own precision rule, per card (names and capabilities as torch
reports them): F5-TTS and Whisper by compute capability, RVC by the card's name."""

from __future__ import annotations

import pytest

from voicedrop.pipeline.modelspec import CPU, Placement
from voicedrop.pipeline.precision import Card, half

CASES = [
    # name, capability, F5-TTS / Whisper, RVC
    ("NVIDIA GeForce RTX 3060", (8, 6), True, True),
    ("NVIDIA GeForce RTX 4090", (8, 9), True, True),
    ("Tesla T4", (7, 5), True, True),
    ("NVIDIA H100 80GB HBM3", (9, 0), True, True),
    ("Tesla V100-SXM2-16GB", (7, 0), True, True),  # "16" but a V100
    ("NVIDIA GeForce GTX 1660 SUPER", (7, 5), True, False),
    ("NVIDIA GeForce GTX 1650", (7, 5), True, False),
    ("NVIDIA GeForce RTX 4060 Ti 16GB", (8, 9), True, False),  # the library reads "16"
    ("NVIDIA GeForce GTX 1060 6GB", (6, 1), False, False),
    ("NVIDIA GeForce GTX 1080 Ti", (6, 1), False, False),
    ("Tesla P40", (6, 1), False, False),
    ("Quadro P4000", (6, 1), False, False),  # and "P40" in "P4000"
    ("Quadro RTX 5000", (7, 5), True, True),
    ("AMD Radeon RX 7900 XTX [ZLUDA]", (8, 8), False, True),
]


@pytest.mark.parametrize(("name", "capability", "f5", "rvc"), CASES)
def test_each_library_s_rule_per_card(name, capability, f5, rvc):
    card = Card(name, capability)
    assert (half(card, "f5tts"), half(card, "whisper"), half(card, "rvc")) == (f5, f5, rvc)
    placement = Placement("cpu", "cuda:0", card)  # read ahead on the host, for the card
    assert placement.half("f5tts") is f5 and placement.half("rvc") is rvc


def test_the_cpu_is_float32_for_every_library():
    assert not any(CPU.half(rule) for rule in ("f5tts", "whisper", "rvc"))
