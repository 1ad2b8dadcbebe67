"""A tiny RVC v2 voice (the published .pth dict, fp16 weights), HuBERT, an index, RMVPE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# SynthesizerTrnMs768NSFsid's positional config, shrunk; 40 kHz (upsampling 10*10*2*2 = 400)
CONFIG: list[Any] = [
    1025, 32, 16, 16, 32, 2, 1, 3, 0, "1", [3], [[1, 3, 5]],
    [10, 10, 2, 2], 32, [16, 16, 4, 4], 1, 16, 40000,
]  # fmt: skip


# The published v2 40 kHz configuration (for GPU benchmarks of real-size models).
FULL_CONFIG: list[Any] = [
    1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11], [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    [10, 10, 2, 2], 512, [16, 16, 4, 4], 109, 256, 40000,
]  # fmt: skip


def build_voice(path: Path, seed: int = 0, *, full: bool = False) -> Path:
    import torch
    from infer_rvc_python.lib.infer_pack.models import SynthesizerTrnMs768NSFsid

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = FULL_CONFIG if full else CONFIG
    net = SynthesizerTrnMs768NSFsid(*config, is_half=False)
    weights = {k: v.half() for k, v in net.state_dict().items() if not k.startswith("enc_q")}
    cpt = {
        "weight": weights,
        "config": config,
        "info": "tiny",
        "sr": "40k",
        "f0": 1,
        "version": "v2",
    }
    torch.save(cpt, path)
    return path


def build_hubert(directory: Path, seed: int = 0, *, full: bool = False) -> Path:
    import torch
    from infer_rvc_python.main import HubertModelWithFinalProj
    from transformers import HubertConfig

    torch.manual_seed(seed)
    if full:  # hubert_base: transformers' defaults are the base model
        HubertModelWithFinalProj(HubertConfig(classifier_proj_size=256)).save_pretrained(
            str(directory)
        )
        return directory
    config = HubertConfig(
        hidden_size=768,  # v2's phone embedding is Linear(768, ...)
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),  # 320 samples a frame, as the real one
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        classifier_proj_size=256,
    )
    HubertModelWithFinalProj(config).save_pretrained(str(directory))
    return directory


def build_index(path: Path, vectors: int = 64, seed: int = 0) -> Path:
    import faiss
    import numpy as np

    data = np.random.default_rng(seed).standard_normal((vectors, 768)).astype(np.float32)
    index = faiss.IndexFlatL2(768)
    index.add(data)
    faiss.write_index(index, str(path))
    return path


def build_rmvpe(path: Path, seed: int = 0) -> Path:
    """RMVPE's architecture is fixed by the library (E2E(4, 1, (2, 2))): this is a
    real-size random network, saved in fp16 like the published rmvpe.pt (~181 MB)."""
    import torch
    from infer_rvc_python.lib.rmvpe import E2E

    torch.manual_seed(seed)
    state = {
        k: v.half() if v.is_floating_point() else v
        for k, v in E2E(4, 1, (2, 2)).state_dict().items()
    }
    torch.save(state, path)
    return path
