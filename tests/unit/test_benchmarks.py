"""The benchmarks run as scripts (`python benchmarks/NAME.py`), which puts benchmarks/ first
on sys.path: a file there named like a standard module (say `http.py`) would hide that
module from every import in the run, torch's own included."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_no_benchmark_hides_a_standard_module():
    names = {p.stem for p in BENCHMARKS.glob("*.py")} | {
        p.name for p in BENCHMARKS.iterdir() if p.is_dir()
    }
    assert len(names) > 5  # the folder was found
    assert names & sys.stdlib_module_names == set()


def test_the_soak_gives_its_last_jobs_the_same_work_as_its_first():
    """Memory that grows over a soak must be the daemon's, not the work's: each engine gets
    texts of the same lengths late in the run as early, though not the same texts."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import soak
    finally:
        sys.path.remove(str(BENCHMARKS))
    mix = soak.jobs(2000)

    def work(window: list[dict[str, Any]]) -> Counter[tuple[str, bool, int]]:
        return Counter((j["tts"]["engine"], "convert" in j, len(j["text"])) for j in window)

    early, late = mix[200:560], mix[1640:2000]
    assert work(early) == work(late)
    assert len({j["text"] for j in early} & {j["text"] for j in late}) < 100
    assert len({len(j["text"]) for j in mix[:100]}) > 1


def test_a_cold_round_reads_the_disk_even_for_a_file_just_written(tmp_path):
    """The cold-load benchmark builds its models, then evicts them: fadvise keeps dirty
    pages, so a first round read a file just written from memory and called it a disk
    read. The files are written back first; mincore must find none of them cached."""
    import os

    sys.path.insert(0, str(BENCHMARKS.parent))
    try:
        from benchmarks.cold_load import drop_cache, resident_pages
    finally:
        sys.path.remove(str(BENCHMARKS.parent))
    path = tmp_path / "model.pth"
    path.write_bytes(os.urandom(8 * 1024 * 1024))  # dirty: not yet on the disk
    fd = os.open(path, os.O_RDONLY)
    try:
        pages, cached = resident_pages(fd)
    finally:
        os.close(fd)
    assert pages > 0 and cached == pages  # in memory, as a freshly built model is
    if filesystem(tmp_path) in ("tmpfs", "ramfs", "overlay"):
        pytest.skip(f"{tmp_path} is on {filesystem(tmp_path)}: its pages cannot be evicted")
    assert drop_cache([path]) == 0.0


def filesystem(path: Path) -> str:
    """The type of the filesystem `path` is on (the longest mount point above it)."""
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fstype
    return kind
