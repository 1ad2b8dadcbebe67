"""The checkpoints users download, in every layout they come in, through the real loaders.

The tiny builders write the published layouts (voicedrop.tiny): XTTS-v2's model.pth with
its pickled config and old weight-norm names (and the layouts the library re-saves it
as), F5-TTS's safetensors and .pt, RVC voices as the WebUI saves them (v1 and v2, 40 and
48 kHz, float16), HuBERT as transformers' folder and as fairseq's hubert_base.pt
(converted once). Each loads, maps its file where it can, and speaks; the precision of a
model is its library's for the card it will run on, whichever path loaded it; and a
demote leaves no tensor behind on the device it left.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import tiny_settings
from tests.engine.test_cold_load import assert_identical, mapped_ranges
from voicedrop.config import GB
from voicedrop.errors import ModelFileError
from voicedrop.manifest import ConvertSpec
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.engines.base import ConvertRequest, TTSRequest, VoiceChoice, synthesize
from voicedrop.pipeline.modelspec import CPU
from voicedrop.pipeline.precision import Card
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice
from voicedrop.tiny.build import RVC_MODEL

VOICES = [("v1", "40k"), ("v1", "48k"), ("v2", "40k"), ("v2", "48k")]


@pytest.fixture(scope="session")
def layouts(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The other layouts of the tiny models (same seeds: the same weights), beside them."""
    from voicedrop.tiny import rvc
    from voicedrop.tiny.f5tts import build_f5tts
    from voicedrop.tiny.whisper import build_whisper
    from voicedrop.tiny.xtts import build_xtts

    root = tmp_path_factory.mktemp("layouts")
    shutil.copytree(tiny, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("spool"))
    for layout in ("resaved", "current"):
        build_xtts(root / f"xtts-{layout}", root / "voices" / "reference.wav", layout=layout)
    build_f5tts(root / "f5tts-pt", layout="pt")
    for version, sr in VOICES:
        rvc.build_voice(root / "rvc" / f"{version}-{sr}.pth", version=version, sr=sr)
    rvc.build_index(root / "rvc" / "v1.index", version="v1")
    rvc.build_fairseq_hubert(root / "fairseq" / "hubert_base.pt")
    build_whisper(root / "whisper")
    return root


def tts_request(root: Path, engine: str) -> TTSRequest:
    text = "This is the reference voice, recorded for a test." if engine == "f5tts" else None
    voice = VoiceChoice(references=(root / "voices" / "reference.wav",), reference_text=text)
    return TTSRequest("layouts", voice, "en", {})


def test_xtts_published_and_resaved_load_mapped_with_the_same_weights_and_voice(layouts, tmp_path):
    """The published model.pth (pickled XttsConfig, weight_g/weight_v) was read unmapped,
    0 of 498 parameters in the file mapping; one re-saved by today's library (its config
    classes pickled under their module now) was refused as "more than weights"."""
    models, said = [], []
    for folder in ("xtts", "xtts-resaved", "xtts-current"):
        engines = build_engines(
            tiny_settings(layouts, tmp_path, engines={"xtts": {"model_dir": folder, "seed": 1}})
        )
        engine = engines.tts["xtts"]
        request = tts_request(layouts, "xtts")
        model = engine.models(request)["model"].load(CPU)
        ranges = mapped_ranges((layouts / folder / "model.pth").resolve())
        params = list(model.parameters())
        inside = [p for p in params if any(a <= p.data_ptr() < b for a, b in ranges)]
        assert len(inside) == len(params), f"{folder}: {len(params) - len(inside)} copied"
        models.append(model)
        said.append(synthesize(engine, {"model": model}, "Hello there.", request, lambda _m: None))
    for other in (1, 2):
        assert_identical(models[0], models[other])
        assert np.array_equal(said[0].samples, said[other].samples) and len(said[0].samples) > 0
    raw = torch.load(layouts / "xtts" / "model.pth", weights_only=False, mmap=True)
    assert type(raw["config"]).__name__ == "XttsConfig"  # the builder wrote the real thing
    assert any(k.endswith("weight_g") for k in raw["model"])
    current = torch.load(layouts / "xtts-current" / "model.pth", weights_only=False, mmap=True)
    assert type(current["config"].model_args).__module__ == "TTS.tts.configs.xtts_config"


def test_f5_safetensors_and_pt_give_the_same_model(layouts, tmp_path):
    dits = []
    for checkpoint in ("f5tts/model.safetensors", "f5tts-pt/model.pt"):
        engines = build_engines(
            tiny_settings(layouts, tmp_path, engines={"f5tts": {"checkpoint": checkpoint}})
        )
        dits.append(engines.tts["f5tts"].models(tts_request(layouts, "f5tts"))["dit"].load(CPU))
    assert_identical(dits[0], dits[1])


@pytest.mark.parametrize(("version", "sr"), VOICES, ids=[f"{v}-{s}" for v, s in VOICES])
def test_every_webui_voice_layout_converts_at_its_own_rate(make_runner, layouts, version, sr):
    index = "rvc/v1.index" if version == "v1" else "rvc/voice.index"  # 256-d or 768-d
    models = {RVC_MODEL: {"engine": "rvc", "path": f"rvc/{version}-{sr}.pth", "index": index}}
    runner = make_runner(layouts, models=models)
    convert = {"engine": "rvc", "model": RVC_MODEL, "method": "pm"}
    outcome = runner.run({"text": "Hello there.", "tts": {"engine": "espeak"}, "convert": convert})
    assert outcome.error is None, outcome.error.message
    [output] = outcome.outputs
    assert output.sample_rate == {"40k": 40000, "48k": 48000}[sr] and output.duration_s > 0.3
    cpt = torch.load(layouts / "rvc" / f"{version}-{sr}.pth", weights_only=True)
    assert {t.dtype for t in cpt["weight"].values()} == {torch.float16}  # as the WebUI saves


@pytest.mark.parametrize("where", ["fairseq/hubert_base.pt", "fairseq"])
def test_fairseqs_hubert_base_pt_is_converted_once_into_the_same_model(layouts, tmp_path, where):
    """The WebUI's hubert_base.pt was refused, naming a fetch that needs the network: RVC
    users have that file on disk. It is converted on its first load into transformers'
    layout beside it, weight for weight the model the transformers folder holds, and the
    conversion is kept for the next load."""

    root = tmp_path / "models"
    shutil.copytree(layouts, root, ignore=shutil.ignore_patterns("spool"))
    settings = tiny_settings(root, tmp_path, engines={"rvc": {"hubert_dir": where}})
    engine = build_engines(settings).convert["rvc"]
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="pm")
    request = ConvertRequest("fairseq", RVC_MODEL, settings.models[RVC_MODEL], spec)
    hubert = engine.models(request)["hubert"]
    converted = hubert.load(CPU)
    folder = root / "fairseq" / "hubert_base.transformers"
    assert (folder / "config.json").is_file()
    made = (folder / "model.safetensors").stat().st_mtime_ns
    reference = build_engines(tiny_settings(root, tmp_path)).convert["rvc"]
    original = reference.models(request)["hubert"].load(CPU)
    assert_identical(converted.model, original.model)
    models = {role: s.load(CPU) for role, s in engine.models(request).items()}
    t = np.arange(16000) / 16000
    audio = Audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000)
    assert len(engine.convert(models, audio, request).samples) > 0
    assert (folder / "model.safetensors").stat().st_mtime_ns == made  # not converted again


def test_a_fairseq_checkpoint_carrying_code_is_refused_and_runs_nothing(layouts, tmp_path):
    from tests.engine.test_model_files import Payload

    root = tmp_path / "models"
    shutil.copytree(layouts, root, ignore=shutil.ignore_patterns("spool"))
    marker = tmp_path / "pwned"
    path = root / "fairseq" / "hubert_base.pt"
    torch.save({"args": Payload(marker), "model": {}}, path)
    settings = tiny_settings(root, tmp_path, engines={"rvc": {"hubert_dir": "fairseq"}})
    engine = build_engines(settings).convert["rvc"]
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="pm")
    request = ConvertRequest("fairseq", RVC_MODEL, settings.models[RVC_MODEL], spec)
    with pytest.raises(ModelFileError) as err:
        engine.models(request)["hubert"].load(CPU)
    assert not marker.exists(), "the payload ran"
    assert "refused" in str(err.value) and str(path) in str(err.value)
    assert not (root / "fairseq" / "hubert_base.transformers").exists()


def specs_of(engines: Any, settings: Any, root: Path) -> dict[str, Any]:
    from voicedrop.pipeline.qc import asr_spec

    request = tts_request(root, "f5tts")
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="rmvpe")
    convert = ConvertRequest("p", RVC_MODEL, settings.models[RVC_MODEL], spec)
    f5 = engines.tts["f5tts"]
    return {
        **f5.models(request),
        "asr": asr_spec(f5.context, root / "whisper"),
        **engines.convert["rvc"].models(convert),
    }


def dtype_of(model: Any) -> torch.dtype:
    if hasattr(model, "pipe"):  # Whisper's pipeline
        model = model.pipe.model
    module = getattr(model, "net_g", None) or getattr(model, "model", None) or model
    return next(module.parameters()).dtype


# (name, capability) as torch reports them, and what each library runs in there
CARDS: dict[str, tuple[Card | None, set[str]]] = {
    "cpu": (None, set()),
    "rtx3060": (
        Card("NVIDIA GeForce RTX 3060", (8, 6)),
        {"dit", "asr", "hubert", "rmvpe", "voice"},
    ),
    "gtx1660": (Card("NVIDIA GeForce GTX 1660 SUPER", (7, 5)), {"dit", "asr"}),
    "gtx1060": (Card("NVIDIA GeForce GTX 1060 6GB", (6, 1)), set()),
    "zluda": (Card("AMD Radeon RX 7900 XTX [ZLUDA]", (8, 8)), {"hubert", "rmvpe", "voice"}),
}


@pytest.mark.parametrize("path", ["direct", "prefetched"])
@pytest.mark.parametrize("card", sorted(CARDS))
def test_a_models_precision_is_its_librarys_for_the_card_it_runs_on_whichever_path_loads_it(
    layouts, tmp_path, path, card
):
    """Prefetch built models for "cpu" and chose float32: on a GPU a prefetched F5 DiT ran
    at twice the memory, and an RVC voice beside a directly loaded HuBERT crashed on the
    dtype. RVC then ran float16 on every card, where its library keeps GTX 10xx/16xx in
    float32, and Whisper float32 where F5's library makes it float16. Device doubles that
    present themselves as these cards stand in for them (their tensors stay in host
    memory)."""
    settings = tiny_settings(layouts, tmp_path)
    engines = build_engines(settings)
    which, halves = CARDS[card]
    runs_on = "cpu" if which is None else "cuda:0"
    manager = ResidencyManager.from_settings(
        settings, FakeDevice(64 * GB, runs_on=runs_on, card=which)
    )
    try:
        specs = specs_of(engines, settings, layouts)
        if path == "prefetched":
            assert all(manager.warm(spec) for spec in specs.values())
        with manager.acquire_all(specs) as models:
            got = {role: dtype_of(model) for role, model in models.items()}
    finally:
        manager.close()
    want = {role: torch.float16 if role in halves else torch.float32 for role in got}
    assert set(got) == {"dit", "vocoder", "asr", "hubert", "rmvpe", "voice"}
    assert got == want


def tensors_in_dicts(module: torch.nn.Module) -> list[tuple[str, torch.device]]:
    """Every tensor reachable from the modules' own attributes, parameters and buffers
    included: what a move must have taken along."""
    found = []
    for name, sub in module.named_modules():
        for attr, value in vars(sub).items():
            values = value.values() if isinstance(value, dict) else [value]
            for v in values:
                if isinstance(v, torch.Tensor):
                    found.append((f"{name}.{attr}", v.device))
    return found


def test_after_use_and_a_demote_no_tensor_is_left_where_the_model_was(layouts, tmp_path):
    """RVC's hook-based weight norm set a plain `weight` on every forward pass, which .to()
    never moves: ~40 MB of a published voice stayed on the GPU after each demote; RMVPE's
    mel front end kept its Hann window in a dict keyed by device. The meta device stands
    in for host memory: anything still on the CPU after the move was left."""
    settings = tiny_settings(layouts, tmp_path)
    engines = build_engines(settings)
    engine = engines.convert["rvc"]
    spec = ConvertSpec(engine="rvc", model=RVC_MODEL, method="rmvpe")
    request = ConvertRequest("demote", RVC_MODEL, settings.models[RVC_MODEL], spec)
    models = {role: s.load(CPU) for role, s in engine.models(request).items()}
    t = np.arange(16000) / 16000
    engine.convert(models, Audio((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000),
                   request)  # fmt: skip
    xtts = engines.tts["xtts"]
    xtts_request = tts_request(layouts, "xtts")
    models["xtts"] = xtts.models(xtts_request)["model"].load(CPU)
    synthesize(xtts, {"model": models["xtts"]}, "Hello.", xtts_request, lambda _m: None)
    f5 = engines.tts["f5tts"]
    f5_request = tts_request(layouts, "f5tts")
    f5_models = {role: s.load(CPU) for role, s in f5.models(f5_request).items()}
    synthesize(f5, f5_models, "Hello.", f5_request, lambda _m: None)
    models |= f5_models
    for role, model in models.items():
        moved = model.to("meta")
        left = [(n, d) for n, d in tensors_in_dicts(moved) if d.type != "meta"]
        assert not left, f"{role}: {len(left)} tensors stayed behind, e.g. {left[:3]}"


# coqui/XTTS-v2's config.json, `model_args`: the architecture users load
PUBLISHED_XTTS = {
    "gpt_max_audio_tokens": 605, "gpt_max_text_tokens": 402, "gpt_max_prompt_tokens": 70,
    "gpt_layers": 30, "gpt_n_model_channels": 1024, "gpt_n_heads": 16,
    "gpt_number_text_tokens": 6681, "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024, "gpt_stop_audio_token": 1025, "gpt_code_stride_len": 1024,
    "gpt_use_masking_gt_prompt_approach": True, "gpt_use_perceiver_resampler": True,
    "input_sample_rate": 22050, "output_sample_rate": 24000, "output_hop_length": 256,
    "decoder_input_dim": 1024, "d_vector_dim": 512, "cond_d_vector_in_each_upsampling_layer": True,
    "duration_const": 102400,
}  # fmt: skip
SHRUNK = {"gpt_layers", "gpt_n_model_channels", "gpt_n_heads", "decoder_input_dim",
          "gpt_max_audio_tokens"}  # fmt: skip


def test_the_tiny_xtts_is_the_published_architecture_with_only_widths_shrunk(layouts):
    """It had no conditioning perceiver and 130 audio tokens (the full-size one 8,194 and
    455.4 M parameters): the tests and the GPU benchmarks ran an XTTS users do not have."""
    import json

    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    args = json.loads((layouts / "xtts" / "config.json").read_text())["model_args"]
    assert {k: args[k] for k in PUBLISHED_XTTS if k not in SHRUNK} == {
        k: v for k, v in PUBLISHED_XTTS.items() if k not in SHRUNK
    }
    state = torch.load(layouts / "xtts" / "model.pth", weights_only=False, mmap=True)["model"]
    assert sum("conditioning_perceiver" in k for k in state) == 16
    assert state["gpt.mel_embedding.weight"].shape[0] == 1026
    assert state["gpt.text_embedding.weight"].shape[0] == 6681
    from voicedrop.pipeline.engines.weights import empty_parameters

    config = XttsConfig()  # and at full size, exactly the published one (counted, not built)
    for name, value in PUBLISHED_XTTS.items():
        setattr(config.model_args, name, value)
    with empty_parameters():
        model = Xtts(config)
        model.tokenizer = VoiceBpeTokenizer(str(layouts / "xtts" / "vocab.json"))
        model.init_models()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 466.9
