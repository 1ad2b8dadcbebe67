"""Tiny RVC voices as RVC's WebUI saves them, HuBERT in the forms users have, an index, RMVPE.

A voice file is what the WebUI's `savee`/`extract_small_model` write: a dict of `weight`
(the synthesizer's state dict without the training-only `enc_q`, every tensor float16,
weight norm under its old `weight_g`/`weight_v` names), `config` (the synthesizer's
positional arguments, the sample rate last), `info`, `sr` ("40k", "48k"), `f0` (1: with
pitch) and `version` ("v1": 256-d phone features, "v2": 768-d).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

Version = Literal["v1", "v2"]
Rate = Literal["40k", "48k"]
# the published upsampling per version and rate (their product is the hop: 400, 480)
UPSAMPLE: dict[tuple[str, str], tuple[list[int], list[int]]] = {
    ("v1", "40k"): ([10, 10, 2, 2], [16, 16, 4, 4]),
    ("v2", "40k"): ([10, 10, 2, 2], [16, 16, 4, 4]),
    ("v1", "48k"): ([10, 6, 2, 2, 2], [16, 16, 4, 4, 4]),
    ("v2", "48k"): ([12, 10, 2, 2], [24, 20, 4, 4]),
}
RATES = {"40k": 40000, "48k": 48000}


def voice_config(version: Version, sr: Rate, *, full: bool = False) -> list[Any]:
    """The synthesizer's positional config: the published one (`full`), or shrunk."""
    rates, kernels = UPSAMPLE[(version, sr)]
    if full:
        return [
            1025, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11], [[1, 3, 5]] * 3,
            rates, 512, kernels, 109, 256, RATES[sr],
        ]  # fmt: skip
    return [1025, 32, 16, 16, 32, 2, 1, 3, 0, "1", [3], [[1, 3, 5]], rates, 32, kernels, 1, 16,
            RATES[sr]]  # fmt: skip


def build_voice(
    path: Path,
    seed: int = 0,
    *,
    full: bool = False,
    version: Version = "v2",
    sr: Rate = "40k",
) -> Path:
    import torch
    from infer_rvc_python.lib.infer_pack import models

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = voice_config(version, sr, full=full)
    cls = models.SynthesizerTrnMs768NSFsid if version == "v2" else models.SynthesizerTrnMs256NSFsid
    net = cls(*config, is_half=False)
    weights = {k: v.half() for k, v in net.state_dict().items() if not k.startswith("enc_q")}
    cpt = {"weight": weights, "config": config, "info": "tiny", "sr": sr, "f0": 1}
    cpt["version"] = version
    torch.save(cpt, path)
    return path


def build_fairseq_hubert(path: Path, seed: int = 0) -> Path:
    """`hubert_base.pt` as RVC's WebUI ships it: fairseq's HuBERT checkpoint (its
    `argparse.Namespace` of arguments, the model's state under fairseq's names, the
    trainer's bookkeeping), holding the same weights as `build_hubert(seed=seed)`."""
    import argparse

    import torch
    from infer_rvc_python.main import HubertModelWithFinalProj

    torch.manual_seed(seed)
    model = HubertModelWithFinalProj(_tiny_hubert_config())
    state = {_fairseq_name(k): v for k, v in model.state_dict().items()}
    state["label_embs_concat"] = torch.zeros(504, 256)  # pre-training targets
    args = argparse.Namespace(
        arch="hubert",
        task="hubert_pretraining",
        encoder_layers=1,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=64,
        encoder_attention_heads=12,
        conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
        conv_pos=16,
        conv_pos_groups=4,
        extractor_mode="default",
        layer_norm_first=False,
        final_dim=256,
        label_rate=50,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "args": args,
            "cfg": None,
            "model": state,
            "criterion": None,
            "optimizer_history": [{"criterion_name": "HubertCriterion", "num_updates": 400000}],
            "task_state": {},
            "extra_state": {"epoch": 1, "val_loss": None},
            "last_optimizer_state": None,
        },
        path,
    )
    return path


def _fairseq_name(key: str) -> str:
    """transformers' HuBERT key -> fairseq's."""
    import re

    for ours, theirs in (
        (r"masked_spec_embed", "mask_emb"),
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"feature_extractor\.conv_layers\.0\.layer_norm\.", "feature_extractor.conv_layers.0.2."),
        (r"feature_projection\.projection\.", "post_extract_proj."),
        (r"feature_projection\.layer_norm\.", "layer_norm."),
        (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
         "encoder.pos_conv.0.weight_g"),
        (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1",
         "encoder.pos_conv.0.weight_v"),
        (r"(encoder\.layers\.\d+)\.attention\.", r"\1.self_attn."),
        (r"(encoder\.layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
        (r"(encoder\.layers\.\d+)\.feed_forward\.intermediate_dense\.", r"\1.fc1."),
        (r"(encoder\.layers\.\d+)\.feed_forward\.output_dense\.", r"\1.fc2."),
    ):  # fmt: skip
        if re.match(ours, key):
            return re.sub(ours, theirs, key)
    return key  # encoder.layer_norm, the layers' final_layer_norm, final_proj: the same


def _tiny_hubert_config() -> Any:
    from transformers import HubertConfig

    return HubertConfig(
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
    HubertModelWithFinalProj(_tiny_hubert_config()).save_pretrained(str(directory))
    return directory


def build_index(path: Path, vectors: int = 64, seed: int = 0, *, version: Version = "v2") -> Path:
    """A feature index of the voice's features: 768-d for v2, 256-d for v1."""
    import faiss
    import numpy as np

    dim = 768 if version == "v2" else 256
    data = np.random.default_rng(seed).standard_normal((vectors, dim)).astype(np.float32)
    index = faiss.IndexFlatL2(dim)
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
