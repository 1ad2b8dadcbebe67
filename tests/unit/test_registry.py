import pytest

from voicedrop.pipeline.engines import default_registries
from voicedrop.pipeline.registry import Registry
from voicedrop.pipeline.stages import default_stages


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


def test_the_built_in_registries_belong_to_their_instance():
    assert list(default_stages()) == ["convert", "post", "qc", "tts"]
    tts, convert = default_registries()
    assert set(tts) == {"espeak", "noop", "xtts", "f5tts"}
    assert set(convert) == {"tape", "rvc"}
    with pytest.raises(ValueError):
        tts.register("espeak", object)  # type: ignore[arg-type]
    other, _ = default_registries()
    other.register("mine", object)  # type: ignore[arg-type]
    assert "mine" not in tts
