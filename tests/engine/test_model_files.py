"""Model files are hostile until proven otherwise: truncated, corrupt, pickled code,
wrong hash, or a path out of the model roots; each is a clear error naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.engine.conftest import tiny_settings
from voicedrop.errors import ConfigError
from voicedrop.pipeline.engines import build_engines
from voicedrop.tiny.build import F5_VOICE, RVC_MODEL, XTTS_VOICE

JOBS = {
    "xtts/model.pth": {"tts": {"engine": "xtts", "voice": XTTS_VOICE}},
    "f5tts/model.safetensors": {"tts": {"engine": "f5tts", "voice": F5_VOICE}},
    "rvc/voice.pth": {
        "tts": {"engine": "espeak"},
        "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "pm"},
    },
}


class Payload:
    """What a hostile checkpoint carries: code that runs when the pickle is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("file", sorted(JOBS))
def test_a_truncated_checkpoint_fails_the_job_naming_the_file(make_runner, tiny_copy, file):
    path = tiny_copy / file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    outcome = make_runner(tiny_copy).run({"text": "Hello.", **JOBS[file]})
    assert outcome.error is not None
    assert outcome.error.code == "model_invalid" and outcome.error.kind == "permanent"
    assert str(path) in outcome.error.message


@pytest.mark.parametrize("file", ["xtts/model.pth", "rvc/voice.pth"])
def test_a_checkpoint_carrying_pickled_code_is_refused_and_runs_nothing(
    make_runner, tiny_copy, tmp_path, file
):
    marker = tmp_path / "pwned"
    path = tiny_copy / file
    torch.save({"model": Payload(marker), "weight": Payload(marker), "config": [1]}, path)
    outcome = make_runner(tiny_copy).run({"text": "Hello.", **JOBS[file]})
    assert not marker.exists(), "the payload ran"
    assert outcome.error is not None and outcome.error.code == "model_invalid"
    assert "refused" in outcome.error.message and str(path) in outcome.error.message


def test_a_checkpoint_that_does_not_match_its_config_names_the_keys(make_runner, tiny_copy):
    import json

    config = tiny_copy / "xtts" / "config.json"
    data = json.loads(config.read_text())
    data["model_args"]["gpt_layers"] += 1  # a config for a deeper model than the file holds
    config.write_text(json.dumps(data))
    outcome = make_runner(tiny_copy).run({"text": "Hello.", **JOBS["xtts/model.pth"]})
    assert outcome.error is not None and outcome.error.code == "model_invalid"
    message = outcome.error.message
    layer = data["model_args"]["gpt_layers"] - 1
    assert "does not match its config" in message and str(tiny_copy / "xtts") in message
    assert "missing" in message and f"gpt.gpt.h.{layer}." in message, message
    assert "and " in message and " more" in message  # a count, not every key


def test_a_wrong_sha256_is_caught_before_the_first_load(make_runner, tiny_copy):
    models = {RVC_MODEL: {"engine": "rvc", "path": "rvc/voice.pth", "sha256": "0" * 64}}
    outcome = make_runner(tiny_copy, models=models).run({"text": "Hello.", **JOBS["rvc/voice.pth"]})
    assert outcome.error is not None and "sha256" in outcome.error.message
    assert "rvc:tiny-rvc" not in [e.key for e in outcome.events if e.event == "load"]


def test_a_symlink_out_of_the_model_roots_stops_start_up(tiny_copy, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "voice.pth").write_bytes((tiny_copy / "rvc" / "voice.pth").read_bytes())
    (tiny_copy / "rvc" / "escape.pth").symlink_to(outside / "voice.pth")
    settings = tiny_settings(
        tiny_copy,
        tmp_path,
        engines={"rvc": {"rmvpe": None}},
        models={"escape": {"engine": "rvc", "path": "rvc/escape.pth"}},
    )
    with pytest.raises(ConfigError) as err:
        build_engines(settings)
    assert "models.escape.path" in err.value.message
    assert "outside the model roots" in err.value.message


def test_a_bad_vocoder_config_class_is_refused(make_runner, tiny_copy):
    config = tiny_copy / "f5tts" / "vocos" / "config.yaml"
    config.write_text(config.read_text().replace("vocos.models.VocosBackbone", "os.system"))
    outcome = make_runner(tiny_copy).run({"text": "Hello.", **JOBS["f5tts/model.safetensors"]})
    assert outcome.error is not None and "not a vocos class" in outcome.error.message


@pytest.mark.parametrize(
    ("inside", "job", "key"),
    [
        ("xtts/model.pth", JOBS["xtts/model.pth"], "xtts"),  # inside a configured model_dir
        ("xtts/vocab.json", JOBS["xtts/model.pth"], "xtts"),  # a file only the library opens
        ("rvc/hubert/config.json", JOBS["rvc/voice.pth"], "hubert"),  # inside hubert_dir
        ("f5tts/vocos/pytorch_model.bin", JOBS["f5tts/model.safetensors"], "vocos"),
    ],
)
def test_a_symlink_inside_a_configured_directory_out_of_the_roots_is_refused(
    make_runner, tiny_copy, tmp_path, inside, job, key
):
    """Only the configured path was confined: a file in the directory could point anywhere
    (a shared model folder is someone else's to write)."""
    outside = tmp_path / "elsewhere" / Path(inside).name
    outside.parent.mkdir()
    (tiny_copy / inside).rename(outside)
    (tiny_copy / inside).symlink_to(outside)
    outcome = make_runner(tiny_copy).run({"text": "Hello.", **job})
    assert outcome.error is not None and outcome.error.code == "model_invalid"
    assert "outside the model roots" in outcome.error.message
    assert str(outside) in outcome.error.message
    assert key not in [e.key for e in outcome.events if e.event == "load"], "loaded anyway"


def test_a_configured_file_swapped_for_a_symlink_after_start_up_is_refused(
    make_runner, tiny_copy, tmp_path
):
    runner = make_runner(tiny_copy)  # checked at start-up: inside the roots
    path = tiny_copy / "rvc" / "voice.pth"
    outside = tmp_path / "elsewhere.pth"
    path.rename(outside)
    path.symlink_to(outside)
    outcome = runner.run({"text": "Hello.", **JOBS["rvc/voice.pth"]})
    assert outcome.error is not None and "outside the model roots" in outcome.error.message


def test_library_messages_reach_the_report_without_terminal_escape_codes():
    from voicedrop.errors import job_error

    error = job_error(RuntimeError("\x1b[1mExpected\x1b[0m all tensors on one device\x07"))
    assert error.message == "RuntimeError: Expected all tensors on one device"
