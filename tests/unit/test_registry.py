import pytest

from voicedrop.pipeline.engines import CONVERT_ENGINES, TTS_ENGINES
from voicedrop.pipeline.registry import Registry
from voicedrop.pipeline.stages import STAGES


def test_a_name_registered_twice_is_an_error():
    registry: Registry[int] = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        registry.register("a", 2)
    assert registry.get("a") == 1


def test_an_unknown_name_lists_the_known_ones():
    registry: Registry[int] = Registry("engine")
    registry.register("b", 1)
    registry.register("a", 2)
    with pytest.raises(KeyError, match=r"unknown engine 'c' \(known: a, b\)"):
        registry.get("c")


def test_the_built_in_registries():
    assert list(STAGES) == ["convert", "post", "tts"]
    assert {"espeak", "noop"} <= set(TTS_ENGINES)
    assert "tape" in CONVERT_ENGINES
    with pytest.raises(ValueError):
        TTS_ENGINES.register("espeak", object)  # type: ignore[arg-type]
