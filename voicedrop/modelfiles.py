"""Model files named in the configuration: confined to the model roots, hashed, read safely.

Configured paths are operator input, but a model root may be a shared folder:
a path (or a symlink inside a root) that resolves outside every root is
refused, a file with a declared sha256 is checked before its first load, and
a PyTorch checkpoint is only ever read with `weights_only=True`, so a pickle
that carries code is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicedrop.errors import ModelFileError

CHUNK = 1024 * 1024


def confine(path: Path, roots: Iterable[Path]) -> Path:
    """`path` with symlinks resolved, if it lies under one of `roots`; else ValueError."""
    resolved = path.resolve()
    allowed = [r.resolve() for r in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed) or "none configured"
        hint = f" (a symlink to {resolved})" if resolved != path.absolute() else ""
        raise ValueError(f"{path}{hint} is outside the model roots ({shown})")
    return resolved


def confine_tree(directory: Path, roots: Iterable[Path], depth: int = 3) -> None:
    """Every entry of a model directory (and of its folders, `depth` deep) lies under one of
    `roots`, symlinks resolved; else a ModelFileError naming it. A library handed a
    directory opens files in it by name (vocab.json, tokenizer files, weights), so a
    symlink among them must not lead it out of the roots."""
    roots = list(roots)
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise ModelFileError(f"{directory}: unreadable: {exc.strerror}") from None
    for item in entries:
        try:
            confine(Path(item.path), roots)
        except ValueError as exc:
            raise ModelFileError(f"refused: {exc}") from None
        if depth > 1 and item.is_dir(follow_symlinks=False):
            confine_tree(Path(item.path), roots, depth - 1)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCheck:
    """Hashes a file once per version, not per load or per job.

    A version is the file's path, inode, size, mtime and ctime: `cp -p`, `rsync -a` and
    `touch -r` give a replaced file its old size and mtime back, but no user can set its
    ctime (nor keep its inode through rsync's rename), so a replaced file is hashed anew."""

    REMEMBERED = 256  # job inputs are new files every time: keep only the latest

    def __init__(self) -> None:
        self._digests: dict[tuple[str, int, int, int, int, int], str] = {}

    def digest(self, path: Path) -> str:
        st = path.stat()
        stamp = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp not in self._digests:
            if len(self._digests) >= self.REMEMBERED:
                del self._digests[next(iter(self._digests))]
            self._digests[stamp] = sha256_of(path)
        return self._digests[stamp]

    def verify(self, path: Path, expected: str | None) -> None:
        if expected is None:
            return
        actual = self.digest(path)
        if actual.lower() != expected.lower():
            raise ModelFileError(f"{path}: sha256 is {actual}, the configuration says {expected}")


def require_files(directory: Path, names: Iterable[str]) -> None:
    """Every file a model directory must hold is there and is a non-empty regular file."""
    for name in names:
        f = directory / name
        if not f.is_file():
            raise ModelFileError(f"{f}: missing (the model directory must hold {name})")
        if f.stat().st_size == 0:
            raise ModelFileError(f"{f}: empty file")


def load_weights(path: Path, *, mmap: bool = True) -> Any:
    """Read a checkpoint: safetensors, or a PyTorch file with weights_only=True (memory-mapped
    where the format allows); every failure is a ModelFileError naming the file."""
    import pickle

    import torch

    try:
        if path.suffix == ".safetensors":
            return map_safetensors(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap" in str(exc):  # the legacy (non-zip) format cannot be mapped
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"{path}: refused: the file holds more than weights (a pickle with code or "
            f"unknown objects); only weights-only checkpoints are loaded ({first})"
        ) from None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: unreadable or corrupt checkpoint: {exc}") from None


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


def map_safetensors(path: Path) -> dict[str, Any]:
    """A safetensors file as tensors backed by one private memory map of it: nothing is read
    until used and nothing is copied (safetensors' `load_file` copies every tensor). The
    header is checked against the file's size; a tensor whose offset does not suit its
    element size (the format does not promise alignment) is copied instead."""
    import torch

    size = path.stat().st_size
    with path.open("rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if not 2 <= length <= min(MAX_HEADER, size - 8):
            raise ModelFileError(f"{path}: not a safetensors file (header length {length})")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (header is not an object)")
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
    data = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))  # type: ignore[arg-type]
    base = 8 + length
    tensors: dict[str, Any] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = getattr(torch, _SAFETENSORS_DTYPES[entry["dtype"]])
            shape = [int(n) for n in entry["shape"]]
            start, end = (base + int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: tensor '{name}' has a malformed header entry") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        count = 1
        for n in shape:
            count *= n
        if not base <= start <= end <= size or end - start != count * itemsize:
            raise ModelFileError(f"{path}: tensor '{name}' lies outside the file or is cut short")
        raw = data[start:end]
        if start % itemsize:
            raw = raw.clone()
        tensors[name] = raw.view(dtype).reshape(shape)
    return tensors


@dataclass(frozen=True)
class ModelFile:
    """A file a configured engine, voice or model needs, as `models check` sees it."""

    label: str  # the config key it comes from
    path: Path
    sha256: str | None = None


def inspect(item: ModelFile) -> str | None:
    """What is wrong with a model file, without loading it; None when it looks whole."""
    path = item.path
    if not path.exists():
        return "missing"
    if path.is_dir():
        return None if any(path.iterdir()) else "empty directory"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if size == 0:
        return "empty file"
    problem = _container_problem(path, head, size)
    if problem:
        return problem
    if item.sha256 is not None:
        actual = sha256_of(path)
        if actual.lower() != item.sha256.lower():
            return f"sha256 is {actual}, the configuration says {item.sha256}"
    return None


def _container_problem(path: Path, head: bytes, size: int) -> str | None:
    """Truncation shows in the container: a zip (.pth) central directory, a safetensors header."""
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"corrupt or truncated checkpoint: {exc}"
        return f"corrupt checkpoint: {bad} fails its CRC" if bad else None
    if path.suffix == ".safetensors":
        header_len = int.from_bytes(head, "little")
        try:
            with path.open("rb") as fh:
                fh.seek(8)
                header = json.loads(fh.read(header_len))
        except (ValueError, OSError) as exc:
            return f"corrupt safetensors header: {exc}"
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        if size < 8 + header_len + end:
            return f"truncated: {size} bytes, the header describes {8 + header_len + end}"
    return None
