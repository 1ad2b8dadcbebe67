"""RVC voice conversion (infer-rvc-python): a voice model, HuBERT, and RMVPE for `rmvpe`.

Three residency keys: `rvc:<model>` per configured voice, `hubert` and `rmvpe`
shared by all voices. The voice `.pth` is read weights-only and built with the
library's synthesizer classes as its own loader does; HuBERT loads from a
local transformers (`save_pretrained`) directory; RMVPE from a local
`rmvpe.pt`. Audio goes in as arrays (never through ffmpeg), and the library's
pipeline classes are driven directly, so `harvest` works on arrays too, with
an f0 cache key unique to the job and segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from voicedrop.config import ConvertModel
from voicedrop.errors import ManifestError, ModelFileError
from voicedrop.modelfiles import HashCheck, ModelFile, load_weights, require_files
from voicedrop.pipeline.audio import Audio
from voicedrop.pipeline.engines.base import (
    ConvertRequest,
    EngineConfig,
    EngineContext,
    check_options,
    option_ranges,
    require_installed,
)
from voicedrop.pipeline.engines.common import load_failed, loadable, model_path, quiet_stdout
from voicedrop.pipeline.engines.rvc_hubert import converted, fairseq_checkpoint
from voicedrop.pipeline.modelspec import ModelSpec, Placement


class RvcSettings(EngineConfig):
    """`[engines.rvc]`: the shared models and the conversion defaults."""

    hubert_dir: Path | None = Field(
        None, description="HuBERT: transformers' folder, or the WebUI's hubert_base.pt (converted)"
    )
    rmvpe: Path | None = Field(None, description="rmvpe.pt, for method = 'rmvpe'")
    fp16: bool = Field(
        True, description="CUDA only: half precision on the cards the library uses it on"
    )
    index_rate: float = Field(0.66, ge=0, le=1)
    filter_radius: int = Field(3, ge=0, le=7)
    rms_mix_rate: float = Field(0.25, ge=0, le=1)
    protect: float = Field(0.33, ge=0, le=0.5)
    seed: int | None = Field(
        None, ge=0, le=2**31, description="fixed seed: the same take converts the same"
    )


OPTIONS = option_ranges(  # what a job may set
    RvcSettings, "index_rate", "filter_radius", "rms_mix_rate", "protect", "seed"
)


class RvcEngine:
    name: ClassVar[str] = "rvc"
    extra: ClassVar[str | None] = "rvc"
    requires: ClassVar[tuple[str, ...]] = ("infer_rvc_python", "faiss", "pyworld", "torch")
    Config: ClassVar[type[EngineConfig]] = RvcSettings
    seeds: ClassVar[bool] = True  # a `seed` option: qc retakes use new ones

    def __init__(self, config: RvcSettings, context: EngineContext) -> None:
        self.config = config
        self.context = context
        self.hubert_dir = model_path(context, "engines.rvc.hubert_dir", config.hubert_dir)
        self.rmvpe_path = model_path(context, "engines.rvc.rmvpe", config.rmvpe)
        self._hashes = HashCheck()
        # RVC's WebUI ships fairseq's hubert_base.pt: converted on its first load
        self.fairseq = fairseq_checkpoint(self.hubert_dir) if self.hubert_dir else None
        if self.hubert_dir is not None and self.fairseq is None:
            try:
                require_files(self.hubert_dir, ("config.json",))
            except ModelFileError as exc:
                raise context.invalid(
                    "engines.rvc.hubert_dir", str(config.hubert_dir), str(exc)
                ) from None
        if self.rmvpe_path is not None and not self.rmvpe_path.is_file():
            raise context.invalid("engines.rvc.rmvpe", str(config.rmvpe), "no such file")

    def version(self) -> str:
        from importlib.metadata import version

        return f"infer-rvc-python {version('infer-rvc-python')}"

    # ---- checks ----------------------------------------------------------------------------

    def files(self) -> list[ModelFile]:
        found = []
        if self.fairseq is not None:
            found.append(ModelFile("engines.rvc.hubert_dir", self.fairseq))
        elif self.hubert_dir is not None:
            found.append(ModelFile("engines.rvc.hubert_dir", self.hubert_dir / "config.json"))
            weights = _weights_file(self.hubert_dir)
            found.append(
                ModelFile(
                    "engines.rvc.hubert_dir", weights or self.hubert_dir / "model.safetensors"
                )
            )
        if self.rmvpe_path is not None:
            found.append(ModelFile("engines.rvc.rmvpe", self.rmvpe_path))
        return found

    def check_model(self, name: str, model: ConvertModel) -> None:
        key = f"models.{name}"
        if self.hubert_dir is None:
            raise self.context.invalid(
                "engines.rvc.hubert_dir", None, f"RVC model '{name}' needs a local HuBERT directory"
            )
        if model.path is None:
            raise self.context.invalid(f"{key}.path", None, "an RVC model needs its .pth file")
        for field, file in (("path", model.path), ("index", model.index)):
            path = model_path(self.context, f"{key}.{field}", file)
            if path is not None and not path.is_file():
                raise self.context.invalid(f"{key}.{field}", str(file), "no such file")
        for option, value in model.options.items():
            low, high = OPTIONS.get(option, (None, None))
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if low is None or high is None or not number or not low <= float(value) <= high:
                allowed = ", ".join(f"{k} {lo:g} to {hi:g}" for k, (lo, hi) in OPTIONS.items())
                raise self.context.invalid(f"{key}.options.{option}", value, f"allowed: {allowed}")

    def check(self, request: ConvertRequest) -> None:
        method = request.spec.method
        if method == "crepe":
            raise ManifestError(
                "crepe is not offered: its model would live outside the residency manager; "
                "use rmvpe, pm or harvest",
                field="convert.method",
            )
        if method == "rmvpe" and self.rmvpe_path is None:
            raise ManifestError(
                "rmvpe needs a local rmvpe.pt ([engines.rvc] rmvpe); use pm or harvest",
                field="convert.method",
            )
        check_options(request.spec.options, OPTIONS, "convert.options")

    # ---- models ----------------------------------------------------------------------------

    def models(self, request: ConvertRequest) -> dict[str, ModelSpec]:
        assert self.hubert_dir is not None
        specs = {
            "hubert": ModelSpec(
                "hubert",
                self._load_hubert,
                checkpoint=self.fairseq or _weights_file(self.hubert_dir),
            )
        }
        if request.spec.method == "rmvpe" and self.rmvpe_path is not None:
            specs["rmvpe"] = ModelSpec("rmvpe", self._load_rmvpe, checkpoint=self.rmvpe_path)
        path = model_path(self.context, f"models.{request.name}.path", request.model.path)
        assert path is not None
        specs["voice"] = ModelSpec(
            f"rvc:{request.name}",
            lambda placement: self._load_voice(placement, request.name, request.model),
            checkpoint=path,
        )
        return specs

    def _half(self, placement: Placement) -> bool:
        """One precision for the voice, HuBERT and RMVPE of a conversion, decided by the
        card they will run on, by the library's rule (HuBERT's features feed the voice's
        network)."""
        return self.config.fp16 and placement.half("rvc")

    def _load_hubert(self, placement: Placement) -> Any:
        require_installed(RvcEngine)
        assert self.hubert_dir is not None
        from infer_rvc_python.main import FairseqHubertWrapper

        directory = self.hubert_dir
        if self.fairseq is not None:
            loadable(self.context, self.fairseq)
            directory = converted(self.fairseq)  # once; then the folder beside it
        # a missing directory would be taken for a hub repository id: refuse it first
        require_files(directory, ("config.json",))
        loadable(self.context, directory)
        try:
            with quiet_stdout():
                model = FairseqHubertWrapper(str(directory)).to(placement.build_on)
        except Exception as exc:
            raise load_failed(directory, exc) from exc
        return (model.half() if self._half(placement) else model.float()).eval()

    def _load_rmvpe(self, placement: Placement) -> Any:
        require_installed(RvcEngine)
        assert self.rmvpe_path is not None
        loadable(self.context, self.rmvpe_path)
        from voicedrop.pipeline.engines.rvc_infer import RmvpeModel

        rmvpe = self.rmvpe_path
        return RmvpeModel(load_weights(rmvpe), rmvpe, self._half(placement)).to(placement.build_on)

    def _load_voice(self, placement: Placement, name: str, model: ConvertModel) -> Any:
        require_installed(RvcEngine)
        path = model_path(self.context, f"models.{name}.path", model.path)
        assert path is not None
        index = model_path(self.context, f"models.{name}.index", model.index)
        for file in (path, index):
            if file is not None:
                loadable(self.context, file)
        self._hashes.verify(path, model.sha256)
        from voicedrop.pipeline.engines.rvc_infer import RvcVoice

        voice = RvcVoice(load_weights(path), path, index, self._half(placement))
        return voice.to(placement.build_on)

    # ---- conversion --------------------------------------------------------------------------

    def _options(self, request: ConvertRequest) -> dict[str, float]:
        seed = self.config.seed
        return {
            "index_rate": self.config.index_rate,
            "filter_radius": float(self.config.filter_radius),
            "rms_mix_rate": self.config.rms_mix_rate,
            "protect": self.config.protect,
            **({} if seed is None else {"seed": float(seed)}),
            **{k: float(v) for k, v in request.model.options.items()},
            **check_options(request.spec.options, OPTIONS, "convert.options"),
        }

    def deterministic(self, request: ConvertRequest) -> bool:
        return "seed" in self._options(request)  # its decoder adds noise: seeded only

    def convert(self, models: Mapping[str, Any], audio: Audio, request: ConvertRequest) -> Audio:
        opts = self._options(request)
        seed = opts.pop("seed", None)
        if seed is not None:
            import torch

            torch.manual_seed(int(seed))
        from voicedrop.pipeline.engines.rvc_infer import convert

        return convert(models, audio, request, opts)


def _weights_file(directory: Path) -> Path | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).exists():
            return directory / name
    return None
