"""RVC models and inference with torch: imported only when an RVC model is loaded or used."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from voicedrop.errors import ModelFileError
from voicedrop.pipeline.audio import Audio, resample
from voicedrop.pipeline.engines.base import ConvertRequest
from voicedrop.pipeline.engines.common import drop_scratch, load_failed, module_device
from voicedrop.pipeline.engines.weights import assign, empty_parameters

HUBERT_RATE = 16000


@dataclass
class _VcConfig:
    """What the library's VC pipeline reads from its Config, for our device."""

    is_half: bool
    device: str

    def __post_init__(self) -> None:  # the library's own values per precision
        self.x_pad, self.x_query, self.x_center, self.x_max = (
            (3, 10, 60, 65) if self.is_half else (1, 6, 38, 41)
        )


class RvcVoice(torch.nn.Module):
    """A voice: the synthesizer (the only tensors) plus what the pipeline needs to drive it."""

    def __init__(self, cpt: Any, path: Path, index: Path | None, half: bool) -> None:
        super().__init__()
        from infer_rvc_python.lib.infer_pack import models as m

        if not isinstance(cpt, dict) or "config" not in cpt or "weight" not in cpt:
            raise ModelFileError(f"{path}: not an RVC voice model (no 'config' and 'weight')")
        try:
            config = list(cpt["config"])
            config[-3] = cpt["weight"]["emb_g.weight"].shape[0]  # speakers, as the library does
            self.tgt_sr, self.if_f0 = int(config[-1]), int(cpt.get("f0", 1))
            self.version = str(cpt.get("version", "v1"))
            cls = {
                ("v1", 1): m.SynthesizerTrnMs256NSFsid,
                ("v1", 0): m.SynthesizerTrnMs256NSFsid_nono,
                ("v2", 1): m.SynthesizerTrnMs768NSFsid,
                ("v2", 0): m.SynthesizerTrnMs768NSFsid_nono,
            }[(self.version, self.if_f0)]
            with empty_parameters():  # the checkpoint's tensors are assigned, not copied
                net_g = cls(*config, is_half=half) if self.if_f0 else cls(*config)
            del net_g.enc_q  # training only; not in a voice file
            dtype = torch.float16 if half else torch.float32  # the library's .half()/.float()
            assign(net_g, cpt["weight"], source=path, dtype=dtype, strict=False)
            fold_weight_norm(net_g)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise load_failed(path, exc) from exc
        self.net_g = net_g.eval()
        self.index, self.big_npy = _read_index(index)


def fold_weight_norm(module: torch.nn.Module) -> int:
    """Replace torch's hook-based weight norm by the plain weight it computes.

    The library's generator uses `torch.nn.utils.weight_norm`: before every forward pass
    its hook sets `weight` as a plain attribute, neither parameter nor buffer, so `.to()`,
    the warm tier's host copies and their restore never move it — about 40 MB of a
    published voice would stay on the GPU after each demote, counted nowhere. At
    inference the weights never change, so folding g·v/‖v‖ into one parameter once is
    the same computation (`remove_weight_norm`, as RVC's own export does). Returns how
    many modules were folded."""
    from torch.nn.utils.weight_norm import WeightNorm

    folded = 0
    for sub in module.modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if isinstance(hook, WeightNorm):
                torch.nn.utils.remove_weight_norm(sub, hook.name)
                folded += 1
    return folded


def _read_index(path: Path | None) -> tuple[Any, Any]:
    if path is None:
        return None, None
    import faiss

    try:
        index = faiss.read_index(str(path))
    except Exception as exc:
        raise load_failed(path, exc) from exc
    if index.ntotal == 0:
        return None, None
    return index, index.reconstruct_n(0, index.ntotal)


class RmvpeModel(torch.nn.Module):
    """RMVPE's network and mel front end as one module the manager can move; the
    library's RMVPE object is bound to them (and to their device) for each use."""

    def __init__(self, state: Any, path: Path, half: bool) -> None:
        super().__init__()
        from infer_rvc_python.lib.rmvpe import E2E, MelSpectrogram

        with empty_parameters():  # the checkpoint's tensors are assigned, not copied
            self.model = E2E(4, 1, (2, 2))
        try:  # the library's RMVPE loads fp32 weights, then .half() for half precision
            assign(self.model, state, source=path, dtype=torch.float16 if half else None)
        except (RuntimeError, TypeError, KeyError) as exc:
            raise load_failed(path, exc) from exc
        self.model.eval()
        self.mel = MelSpectrogram(half, 128, 16000, 1024, 160, None, 30, 8000)
        self.half_precision = half

    def bound(self) -> Any:
        from infer_rvc_python.lib.rmvpe import RMVPE

        rmvpe = object.__new__(RMVPE)  # the library's __init__ would read the file again
        rmvpe.model, rmvpe.mel_extractor = self.model, self.mel
        rmvpe.is_half, rmvpe.device = self.half_precision, module_device(self.model)
        rmvpe.resample_kernel = {}
        cents = 20 * np.arange(360) + 1997.3794084376191
        rmvpe.cents_mapping = np.pad(cents, (4, 4))
        return rmvpe


def convert(
    models: Mapping[str, Any], audio: Audio, request: ConvertRequest, opts: Mapping[str, float]
) -> Audio:
    """BaseLoader.infer of the library for array input, harvest included."""
    from infer_rvc_python import root_pipe
    from scipy import signal

    voice, hubert = models["voice"], models["hubert"]
    device = module_device(voice.net_g)
    half = next(voice.net_g.parameters()).dtype == torch.float16
    pipe = root_pipe.VC(voice.tgt_sr, _VcConfig(half, str(device)))
    if "rmvpe" in models:
        pipe.model_rmvpe = models["rmvpe"].bound()
    x = resample(audio, HUBERT_RATE).samples.astype(np.float64)
    peak = np.abs(x).max() / 0.95
    x = signal.filtfilt(root_pipe.bh, root_pipe.ah, x / peak if peak > 1 else x)
    window = pipe.window
    padded = np.pad(x, (window // 2, window // 2), mode="reflect")
    cuts = []
    if padded.shape[0] > pipe.t_max:
        sums = np.zeros_like(x)
        for i in range(window):
            sums += padded[i : i - window]
        for t in range(pipe.t_center, x.shape[0], pipe.t_center):
            part = np.abs(sums[t - pipe.t_query : t + pipe.t_query])
            cuts.append(t - pipe.t_query + int(np.where(part == part.min())[0][0]))
    x_pad = np.pad(x, (pipe.t_pad, pipe.t_pad), mode="reflect")
    p_len = x_pad.shape[0] // window
    sid = torch.tensor(0, device=device).unsqueeze(0).long()
    pitch = pitchf = None
    if voice.if_f0 == 1:
        # the library caches harvest's curve (an lru_cache of 128) by this key: the
        # content's digest, so that a curve is never another audio's (an id() was reused
        # by a retried attempt), and the cache is emptied after each use
        key = hashlib.sha256(x_pad.tobytes()).hexdigest()
        try:
            coarse, fine = pipe.get_f0(
                key,
                x_pad,
                p_len,
                int(request.spec.pitch),
                request.spec.method,
                int(opts["filter_radius"]),
                None,
            )
        finally:
            root_pipe.input_audio_path2wav.pop(key, None)
            root_pipe.cache_harvest_f0.cache_clear()
        pitch = torch.tensor(coarse[:p_len], device=device).unsqueeze(0).long()
        pitchf = torch.tensor(fine[:p_len], device=device).unsqueeze(0).float()
    index_rate = opts["index_rate"] if voice.index is not None else 0.0
    times = [0.0, 0.0, 0.0]
    pieces: list[Any] = []
    start, last = 0, cast(int | None, None)

    def run(chunk: Any, p: Any, pf: Any) -> Any:
        out = pipe.vc(
            hubert,
            voice.net_g,
            sid,
            chunk,
            p,
            pf,
            times,
            voice.index,
            voice.big_npy,
            index_rate,
            voice.version,
            opts["protect"],
        )
        return out[pipe.t_pad_tgt : -pipe.t_pad_tgt]

    for cut in cuts:
        last = cut // window * window
        end = (last + pipe.t_pad2) // window
        p = pitch[:, start // window : end] if pitch is not None else None
        pf = pitchf[:, start // window : end] if pitchf is not None else None
        pieces.append(run(x_pad[start : last + pipe.t_pad2 + window], p, pf))
        start = last
    tail = slice(last // window if last is not None else 0, None)
    pieces.append(
        run(
            x_pad[last:] if last is not None else x_pad,
            pitch[:, tail] if pitch is not None else None,
            pitchf[:, tail] if pitchf is not None else None,
        )
    )
    for model in (voice.net_g, hubert, models.get("rmvpe")):
        if model is not None:  # e.g. each attention layer's last attention map
            drop_scratch(model)
    out = np.concatenate(pieces)
    if opts["rms_mix_rate"] != 1:
        out = root_pipe.change_rms(x, HUBERT_RATE, out, voice.tgt_sr, opts["rms_mix_rate"])
    peak = np.abs(out).max() / 0.99
    return Audio(np.asarray(out / peak if peak > 1 else out, dtype=np.float32), voice.tgt_sr)
