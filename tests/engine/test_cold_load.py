"""Cold loads: every model is built without initialisation and given the checkpoint's own
(memory-mapped) tensors. What comes out must be the library's model, bit for bit, and speak
the same audio for the same seed; the weights must be the file's pages, not a copy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks import library_loads as library
from tests.engine.conftest import tiny_settings
from voicedrop.errors import ModelFileError
from voicedrop.manifest import ConvertSpec
from voicedrop.modelfiles import load_weights
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, VoiceChoice, synthesize
from voicedrop.pipeline.engines.weights import assign, empty_parameters
from voicedrop.pipeline.modelspec import CPU
from voicedrop.tiny.build import RVC_MODEL

TEXT = "The same words, twice."


@pytest.fixture
def config(tiny: Path, tmp_path: Path) -> Any:
    return tiny_settings(tiny, tmp_path)


@pytest.fixture
def engines(config: Any) -> Any:
    return build_engines(config)


def tts_request(tiny: Path, text: str | None = None) -> TTSRequest:
    voice = VoiceChoice(references=(tiny / "voices" / "reference.wav",), reference_text=text)
    return TTSRequest("cold", voice, "en", {})


def convert_request(settings: Any) -> ConvertRequest:
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="rmvpe")
    return ConvertRequest("cold", RVC_MODEL, settings.models[RVC_MODEL], spec)


def assert_identical(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """The same state dict, bit for bit and dtype for dtype, and the same buffers (the
    non-persistent ones, computed at construction, included)."""
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    buffers, theirs_buffers = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert buffers.keys() == theirs_buffers.keys()
    assert all(torch.equal(t, theirs_buffers[k]) for k, t in buffers.items())


def f5_specs(engines: Any, tiny: Path) -> dict[str, Any]:
    return engines.tts["f5tts"].models(tts_request(tiny, "The reference."))


def test_xtts_is_the_librarys_model_bit_for_bit_and_says_the_same(engines, tiny, tmp_path):
    engine = engines.tts["xtts"]
    request = tts_request(tiny)
    ours = engine.models(request)["model"].load(CPU)
    copy = tmp_path / "xtts"  # the library re-saves a published model.pth in place
    shutil.copytree(tiny / "xtts", copy)
    theirs = library.xtts(copy)
    assert_identical(ours, theirs)
    say = [synthesize(engine, {"model": m}, TEXT, request, lambda _m: None) for m in (ours, theirs)]
    assert np.array_equal(say[0].samples, say[1].samples) and len(say[0].samples) > 0


def test_f5_dit_and_vocos_are_the_librarys_bit_for_bit_and_say_the_same(engines, tiny):
    engine = engines.tts["f5tts"]
    specs = f5_specs(engines, tiny)
    dit, vocoder = specs["dit"].load(CPU), specs["vocoder"].load(CPU)
    lib_dit = library.f5_dit(engine.checkpoint, engine.arch[1])
    lib_vocoder = library.vocos(engine.vocoder_dir)
    assert_identical(dit, lib_dit)
    assert_identical(vocoder, lib_vocoder)
    request = tts_request(tiny, "This is the reference voice, recorded for a test.")
    say = [
        synthesize(engine, {"dit": d, "vocoder": v}, TEXT, request, lambda _m: None)
        for d, v in ((dit, vocoder), (lib_dit, lib_vocoder))
    ]
    assert np.array_equal(say[0].samples, say[1].samples) and len(say[0].samples) > 0


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
def test_rvc_voice_and_rmvpe_are_the_librarys_bit_for_bit(config, tiny, half):
    from voicedrop.pipeline.engines.rvc_infer import fold_weight_norm

    voice = rvc_voice_of(config, half)
    theirs = library.rvc_voice(tiny / "rvc" / "voice.pth", half)
    assert fold_weight_norm(theirs) > 0  # ours comes folded (what its hooks compute, once)
    assert_identical(voice.net_g, theirs)
    from voicedrop.pipeline.engines.rvc_infer import RmvpeModel

    path = tiny / "rvc" / "rmvpe.pt"
    assert_identical(RmvpeModel(load_weights(path), path, half).model, library.rmvpe(path, half))


def rvc_voice_of(settings: Any, half: bool) -> Any:
    from voicedrop.pipeline.engines.rvc_infer import RvcVoice

    model = settings.models[RVC_MODEL]
    path = settings.resolve(model.path)
    return RvcVoice(load_weights(path), path, None, half)


def test_rvc_converts_the_same_with_the_librarys_models(engines, config, tiny):
    engine = engines.convert["rvc"]
    request = convert_request(config)
    specs = engine.models(request)
    ours = {role: spec.load(CPU) for role, spec in specs.items()}
    theirs = {role: spec.load(CPU) for role, spec in specs.items()}  # then their networks:
    theirs["voice"].net_g = library.rvc_voice(tiny / "rvc" / "voice.pth")
    theirs["rmvpe"].model = library.rmvpe(tiny / "rvc" / "rmvpe.pt")
    t = np.arange(16000) / 16000
    audio = Audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)
    out = []
    for models in (ours, theirs):
        torch.manual_seed(7)  # the NSF source draws noise
        out.append(engine.convert(models, audio, request))
    assert np.array_equal(out[0].samples, out[1].samples) and len(out[0].samples) > 0


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """The address ranges where this process maps `path`."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_a_cpu_load_uses_the_files_pages_instead_of_copying_them(engines, tiny):
    """On the CPU the weights are the checkpoint's mapped pages: a load never holds a second
    copy (XTTS's .pth through torch.load's mmap, F5's safetensors through our own map)."""
    xtts = engines.tts["xtts"].models(tts_request(tiny))["model"].load(CPU)
    dit = f5_specs(engines, tiny)["dit"].load(CPU)
    for model, path in (
        (xtts, tiny / "xtts" / "model.pth"),
        (dit, engines.tts["f5tts"].checkpoint),
    ):
        ranges = mapped_ranges(path.resolve())
        assert ranges, f"{path} is not mapped"
        params = list(model.parameters())
        inside = [p for p in params if any(a <= p.data_ptr() < b for a, b in ranges)]
        assert len(inside) == len(params), f"{len(params) - len(inside)} parameters were copied"


def test_a_checkpoint_missing_a_weight_is_refused_naming_it(tiny, tmp_path):
    """RVC loads non-strictly (the library's way); a weight the file lacks must not be left
    uninitialised on the meta device."""
    cpt = load_weights(tiny / "rvc" / "voice.pth")
    del cpt["weight"]["dec.conv_pre.weight"]
    broken = tmp_path / "voice.pth"
    torch.save(cpt, broken)
    from voicedrop.pipeline.engines.rvc_infer import RvcVoice

    with pytest.raises(ModelFileError, match=r"voice\.pth.*dec\.conv_pre\.weight"):
        RvcVoice(load_weights(broken), broken, None, False)


def test_building_empty_allocates_and_initialises_nothing():
    with empty_parameters():
        layer = torch.nn.Linear(4096, 4096)
    assert layer.weight.is_meta and layer.bias.is_meta
    state = {"weight": torch.ones(4096, 4096), "bias": torch.zeros(4096)}
    assign(layer, state, source=Path("x"))
    assert layer.weight.data_ptr() == state["weight"].data_ptr(), "copied, not assigned"
    with empty_parameters(), pytest.raises(RuntimeError, match="inside empty_parameters"):
        assign(torch.nn.Linear(2, 2), {}, source=Path("x"))


def test_a_safetensors_file_that_lies_about_its_tensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(8, dtype=torch.float32)}, str(path))
    assert torch.equal(load_weights(path)["w"], torch.arange(8, dtype=torch.float32))
    shutil.copy(path, tmp_path / "cut.safetensors")
    with (tmp_path / "cut.safetensors").open("r+b") as fh:
        fh.truncate(path.stat().st_size - 4)
    with pytest.raises(ModelFileError, match="outside the file or is cut short"):
        load_weights(tmp_path / "cut.safetensors")


def test_a_model_built_on_another_thread_meanwhile_keeps_its_weights():
    """The prefetch thread builds models while the executor computes: `empty_parameters`
    must empty only the building thread's modules, and both patches must unwind."""
    import sys
    import threading

    from voicedrop.pipeline.engines.common import quiet_stdout

    inside, built, done = threading.Event(), threading.Event(), threading.Event()
    stdout = sys.stdout

    def prefetch_thread() -> None:
        with quiet_stdout(), empty_parameters():
            torch.nn.Linear(4, 4)
            inside.set()
            assert built.wait(10)
        done.set()

    thread = threading.Thread(target=prefetch_thread)
    thread.start()
    assert inside.wait(10)
    with quiet_stdout():
        layer = torch.nn.Linear(4, 4)  # the executor's thread, meanwhile
        built.set()
        thread.join(10)  # the other thread leaves its blocks while this one is inside
    assert done.is_set()
    assert not layer.weight.is_meta and torch.count_nonzero(layer.weight) > 0
    assert sys.stdout is stdout, "stdout left redirected after overlapping quiet blocks"
    assert not torch.nn.Linear(2, 2).weight.is_meta, "nn.Module left patched"


def test_f5_prepares_a_reference_as_infer_process_does(engines, tiny, tmp_path, monkeypatch):
    """Leading and trailing silence around the recording: the library's public path trims
    it (preprocess_ref_audio_text) and sizes its batches from what is left. voicedrop cut
    12 s from the start instead, and its output was 98,560 samples against 88,064."""
    import soundfile as sf
    from f5_tts.infer import utils_infer

    speech, rate = sf.read(str(tiny / "voices" / "reference.wav"), dtype="float32")
    padded = np.concatenate([np.zeros(int(0.9 * rate)), speech, np.zeros(int(1.6 * rate))])
    recording = tmp_path / "with-silence.wav"
    sf.write(str(recording), padded.astype(np.float32), rate, subtype="PCM_16")
    text = "This is the reference voice, recorded for a test"
    engine = engines.tts["f5tts"]
    specs = engine.models(tts_request(tiny, text))
    models = {role: spec.load(CPU) for role, spec in specs.items()}
    request = TTSRequest("ref", VoiceChoice(references=(recording,), reference_text=text), "en")
    ours = synthesize(engine, models, TEXT, request, lambda _m: None)

    def load(path, *_a, **_k):  # torchaudio's file I/O needs torchcodec and FFmpeg
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    monkeypatch.setattr(utils_infer.torchaudio, "load", load)
    ref_file, ref_text = utils_infer.preprocess_ref_audio_text(
        str(recording), text, show_info=lambda *_a: None
    )
    torch.manual_seed(engine.config.seed)
    wave, sr, _ = utils_infer.infer_process(
        ref_file, ref_text, TEXT, models["dit"], models["vocoder"],
        show_info=lambda *_a: None, progress=_Quiet(), nfe_step=engine.config.nfe_step,
        cfg_strength=engine.config.cfg_strength,
        sway_sampling_coef=engine.config.sway_sampling_coef, speed=engine.config.speed,
        device="cpu",
    )  # fmt: skip
    assert sr == ours.sample_rate and len(wave) == len(ours.samples)
    assert np.array_equal(np.asarray(wave, dtype=np.float32), ours.samples)


class _Quiet:
    @staticmethod
    def tqdm(items):
        return items
