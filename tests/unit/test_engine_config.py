"""Engine settings, voices and models are checked at start-up, by the engines: a bad value
stops the daemon with the key, the value, where it came from and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from tests.conftest import drop, hello, make_settings, read_report, unit_service
from voicedrop.config import load_settings
from voicedrop.daemon.service import Service
from voicedrop.errors import ConfigError
from voicedrop.pipeline.engines import build_engines, default_registries
from voicedrop.pipeline.engines.base import EngineConfig
from voicedrop.testing import FakeDevice


def refused(settings) -> str:
    with pytest.raises(ConfigError) as err:
        build_engines(settings)
    return err.value.message


def test_an_engine_option_out_of_range_names_key_value_and_file(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("[engines.espeak]\nrate = 2000\n")
    message = refused(load_settings(config, env={}))
    assert "engines.espeak.rate = 2000" in message
    assert f"(from {config})" in message and "less than or equal to 450" in message


def test_the_same_from_the_environment_names_the_variable():
    settings = load_settings(env={"VOICEDROP_ENGINES__ESPEAK__PITCH": "300"})
    message = refused(settings)
    assert "engines.espeak.pitch = '300'" in message
    assert "(from VOICEDROP_ENGINES__ESPEAK__PITCH)" in message


def test_a_voice_the_engine_does_not_have(tmp_path):
    message = refused(make_settings(tmp_path, voices={"x": {"engine_voice": "zz-qq"}}))
    assert "voices.x.engine_voice = 'zz-qq'" in message and "espeak-ng has no voice" in message


def test_a_model_whose_engine_is_wrong(tmp_path):
    message = refused(make_settings(tmp_path, models={"chipmunk": {"engine": "tapee"}}))
    assert "models.chipmunk.engine = 'tapee'" in message
    assert "unknown convert engine (known: rvc, tape)" in message


def test_a_voice_of_an_unknown_engine_and_an_unknown_engine_section(tmp_path):
    assert "unknown tts engine" in refused(
        make_settings(tmp_path, voices={"v": {"engine": "nope"}})
    )
    assert "engines.nope" in refused(make_settings(tmp_path, engines={"nope": {"x": 1}}))


def test_an_unknown_key_in_an_engine_section(tmp_path):
    message = refused(make_settings(tmp_path, engines={"espeak": {"speed": 2}}))
    assert "engines.espeak.speed" in message and "Extra inputs are not permitted" in message


class _Missing:
    """An engine whose library is not installed here."""

    name: ClassVar[str] = "ghost"
    extra: ClassVar[str | None] = "ghost"
    requires: ClassVar[tuple[str, ...]] = ("no_such_module_anywhere",)

    class Config(EngineConfig):
        pass


def test_a_voice_for_an_engine_that_is_not_installed_stops_start_up(tmp_path):
    tts, convert = default_registries()
    tts.register("ghost", _Missing)  # type: ignore[arg-type]
    settings = make_settings(tmp_path, voices={"v": {"engine": "ghost"}})
    hint = r"pip install -c requirements/constraints.txt '\.\[ghost\]'"
    with pytest.raises(ConfigError, match=hint):
        build_engines(settings, (tts, convert))


def test_a_job_for_an_engine_that_is_not_installed_fails_permanently_naming_the_extra(tmp_path):
    tts, convert = default_registries()
    tts.register("ghost", _Missing)  # type: ignore[arg-type]
    settings = make_settings(tmp_path)
    svc = unit_service(
        settings, device=FakeDevice(2**30), engines=build_engines(settings, (tts, convert))
    )
    drop(svc.spool.inbox, "g.json", {"text": "x", "tts": {"engine": "ghost"}})
    svc.executor.step()
    report = read_report(svc.spool.failed / "g")
    assert report["error"]["code"] == "engine_unavailable"
    assert report["error"]["kind"] == "permanent" and "'.[ghost]'" in report["error"]["message"]


def test_a_manifest_naming_a_model_of_another_engine_says_so(tmp_path):
    svc = unit_service(make_settings(tmp_path), device=FakeDevice(2**30))
    drop(svc.spool.inbox, "m.json", hello(convert={"engine": "rvc", "model": "chipmunk"}))
    svc.executor.step()
    error = read_report(svc.spool.failed / "m")["error"]
    assert error["field"] == "convert.model" and "'chipmunk' is a tape model" in error["message"]


def test_start_up_refuses_before_any_job_runs(tmp_path):
    settings = make_settings(tmp_path, engines={"espeak": {"rate": 2000}})
    with pytest.raises(ConfigError):
        Service(settings, device=FakeDevice(2**30))
