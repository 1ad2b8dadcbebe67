"""Tiny real-layout models of every engine, built once per test run with the selftest's
builders, and settings/runners on them. The engines are installed by `make test`: a
missing one fails these tests rather than skipping them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from voicedrop.config import Settings, load_settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.device import CPUDevice
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.tiny.build import build_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    build_tiny(root, ["xtts", "f5tts", "rvc"], rmvpe=True, asr=True)
    return root


@pytest.fixture
def tiny_copy(tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny models, for tests that damage or replace files."""
    target = tmp_path / "models"
    shutil.copytree(tiny, target, ignore=shutil.ignore_patterns("spool", "rmvpe.pt"))
    return target


def tiny_settings(root: Path, tmp: Path, **overrides: Any) -> Settings:
    data: dict[str, Any] = {"spool": tmp / "spool", "device": "cpu"}
    data.update(overrides)
    return load_settings(root / "config.toml", env={}, overrides=data)


class Runner:
    """A JobRunner on the tiny models with its own manager, as the daemon builds them."""

    def __init__(self, settings: Settings, out: Path) -> None:
        self.settings = settings
        self.manager = ResidencyManager.from_settings(settings, CPUDevice())
        self.runner = JobRunner(settings, build_engines(settings), self.manager)
        self.out = out
        self.count = 0

    def run(self, manifest: dict[str, Any], reference: Path | None = None) -> Outcome:
        self.count += 1
        job = JobInput(
            f"job{self.count}",
            Manifest.model_validate(manifest),
            reference,
            self.out / f"job{self.count}",
        )
        return self.runner.run(job, lambda _m: None)

    def close(self) -> None:
        self.manager.close()


@pytest.fixture
def make_runner(tiny: Path, tmp_path: Path):
    made: list[Runner] = []

    def make(root: Path | None = None, **overrides: Any) -> Runner:
        if root is not None:  # a tiny_copy has no rmvpe.pt (181 MB)
            overrides.setdefault("engines", {"rvc": {"rmvpe": None}})
        settings = tiny_settings(root or tiny, tmp_path, **overrides)
        runner = Runner(settings, tmp_path / "out")
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()
