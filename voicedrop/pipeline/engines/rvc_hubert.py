"""RVC's WebUI `hubert_base.pt` — fairseq's HuBERT checkpoint — made loadable: converted
once into the transformers layout the RVC library reads (`HubertModelWithFinalProj`,
`save_pretrained`), in a folder beside the file.

fairseq does not install on Python 3.11 and later, and its checkpoint is a pickle: the
file is read weights-only, the one object beyond tensors that fairseq writes there (its
`argparse.Namespace` of arguments) admitted and nothing else, so a file carrying code is
refused before anything in it runs. The weights are renamed key by key (the mapping of
transformers' own conversion script), the shapes of the architecture read from them, and
the rest of it (attention heads, conv strides) from fairseq's arguments. The converted
folder records which file it came from (size and modification time): a replaced
`hubert_base.pt` is converted again.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from voicedrop.errors import ModelFileError
from voicedrop.modelfiles import load_weights
from voicedrop.pipeline.engines.common import load_failed

SUFFIX = ".transformers"  # hubert_base.pt -> hubert_base.transformers/
SOURCE = "voicedrop-source.json"  # in the converted folder: the file it was made from

# fairseq's name (a regular expression) -> transformers' (HubertModel, its final projection)
_RENAMES = [
    (
        r"feature_extractor\.conv_layers\.(\d+)\.0\.weight",
        r"feature_extractor.conv_layers.\1.conv.weight",
    ),
    (
        r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)",
        r"feature_extractor.conv_layers.0.layer_norm.\1",
    ),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv_embed.conv.bias"),
    (
        r"encoder\.pos_conv\.0\.weight_g",
        r"encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        r"encoder\.pos_conv\.0\.weight_v",
        r"encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.(k|v|q|out)_proj\.(weight|bias)",
        r"encoder.layers.\1.attention.\2_proj.\3",
    ),
    (
        r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
        r"encoder.layers.\1.layer_norm.\2",
    ),
    (
        r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
        r"encoder.layers.\1.feed_forward.intermediate_dense.\2",
    ),
    (
        r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)",
        r"encoder.layers.\1.feed_forward.output_dense.\2",
    ),
    (
        r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)",
        r"encoder.layers.\1.final_layer_norm.\2",
    ),
    (r"final_proj\.(weight|bias)", r"final_proj.\1"),
    (r"mask_emb", r"masked_spec_embed"),
]
_UNUSED = ("label_embs_concat",)  # pre-training targets: not part of the model
_BASE_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2"


def fairseq_checkpoint(path: Path) -> Path | None:
    """The `hubert_base.pt` of RVC's WebUI, given as the file or in a folder without
    transformers' config.json: what most users have."""
    if path.is_file() and path.suffix == ".pt":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        return next(iter(sorted(path.glob("*.pt"))), None)
    return None


def converted(source: Path) -> Path:
    """The transformers form of `source` beside it, converted now if it is not there yet
    (or was made from another file of that name)."""
    target = source.with_name(source.stem + SUFFIX)
    stamp = _stamp(source)
    record = target / SOURCE
    if record.exists() and json.loads(record.read_text()) == stamp:
        return target
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{source.stem}-", dir=source.parent))
    except OSError as exc:
        raise ModelFileError(
            f"{source}: fairseq's HuBERT is converted once into {target.name}/ beside it, but "
            f"that folder cannot be written ({exc.strerror}); copy the file to a writable "
            "folder inside the model roots and point hubert_dir there"
        ) from None
    try:
        convert(source, work)
        (work / SOURCE).write_text(json.dumps(stamp))
        if target.exists():  # made from an older file
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(work, target)
        except OSError:  # another process converted it meanwhile: theirs is as good
            if not (record.exists() and json.loads(record.read_text()) == stamp):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def convert(source: Path, target: Path) -> None:
    """fairseq's checkpoint at `source` as transformers' folder `target` (float32)."""
    import torch
    from infer_rvc_python.main import HubertModelWithFinalProj

    state, args = read(source)
    renamed = {}
    for key, value in state.items():
        new = _rename(key)
        if new is not None:
            renamed[new] = value.float()
    config = hubert_config(renamed, args)
    model = HubertModelWithFinalProj(config)
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        raise load_failed(source, exc) from None
    with torch.no_grad():
        model.save_pretrained(str(target))


def read(source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and fairseq's arguments, weights-only (its Namespace admitted)."""
    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = load_weights(source)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ModelFileError(f"{source}: not a fairseq checkpoint (no 'model' state dict)")
    raw = checkpoint.get("args")
    if isinstance(raw, argparse.Namespace):
        args = vars(raw)
    else:  # newer fairseq: a plain dict of its config, the model's part under "model"
        cfg = checkpoint.get("cfg")
        args = dict(cfg.get("model") or {}) if isinstance(cfg, dict) else {}
    if args.get("extractor_mode", "default") != "default" or args.get("layer_norm_first"):
        raise ModelFileError(
            f"{source}: a HuBERT of another layout (extractor_mode "
            f"{args.get('extractor_mode')!r}, layer_norm_first {args.get('layer_norm_first')}):"
            " only the base layout RVC uses is converted"
        )
    return checkpoint["model"], args


def hubert_config(state: dict[str, Any], args: dict[str, Any]) -> Any:
    """The architecture: widths and depths from the weights, the rest from the arguments."""
    from transformers import HubertConfig

    convs = sorted(
        int(m.group(1))
        for k in state
        if (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", k))
    )
    layers = [state[f"feature_extractor.conv_layers.{i}.conv.weight"].shape for i in convs]
    strides = [
        s for _dim, _kernel, s in _conv_layers(str(args.get("conv_feature_layers") or _BASE_CONV))
    ]
    if len(strides) != len(layers):
        raise ModelFileError(
            f"{len(layers)} conv layers in the weights, {len(strides)} in the arguments"
        )
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    pos = state["encoder.pos_conv_embed.conv.parametrizations.weight.original1"].shape
    return HubertConfig(
        hidden_size=state["feature_projection.projection.weight"].shape[0],
        num_hidden_layers=depth,
        num_attention_heads=int(args.get("encoder_attention_heads", 12)),
        intermediate_size=state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=tuple(int(s[0]) for s in layers),
        conv_kernel=tuple(int(s[2]) for s in layers),
        conv_stride=tuple(strides),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in state,
        num_conv_pos_embeddings=int(pos[2]),
        num_conv_pos_embedding_groups=int(args.get("conv_pos_groups", 16)),
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        classifier_proj_size=state["final_proj.weight"].shape[0],
    )


def _rename(key: str) -> str | None:
    if key in _UNUSED:
        return None
    for pattern, replacement in _RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ModelFileError(f"an unknown key in fairseq's HuBERT: {key}")


def _conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers`, e.g. "[(512, 10, 5)] + [(512, 3, 2)] * 4", read
    without running it: lists of int triples, `+` and `* n` only."""

    def value(node: ast.AST) -> list[tuple[int, int, int]]:
        if isinstance(node, ast.List) and all(
            isinstance(e, ast.Tuple) and len(e.elts) == 3 for e in node.elts
        ):
            return [tuple(_int(x) for x in e.elts) for e in node.elts]  # type: ignore[attr-defined,misc]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return value(node.left) * _int(node.right)
        raise ModelFileError(f"conv_feature_layers {spec!r}: not a list of (dim, kernel, stride)")

    try:
        return value(ast.parse(spec, mode="eval").body)
    except SyntaxError:
        raise ModelFileError(f"conv_feature_layers {spec!r}: not an expression") from None


def _int(node: ast.AST) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    raise ModelFileError("conv_feature_layers: only whole numbers")


def _stamp(path: Path) -> dict[str, Any]:
    info = path.stat()
    return {"file": path.name, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
