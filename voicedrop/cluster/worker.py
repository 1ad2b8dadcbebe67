"""A cluster worker: one GPU's device, residency manager, engines and job runner.

The body of a Ray actor (pool.py makes it one; this module never imports Ray). It never
sees the spool: the head sends a job's manifest, script and reference recording as
`Work`, the worker runs it in a scratch folder of its own and sends back `Done`: the
runner's Outcome (events, VRAM snapshots, errors), the output files' bytes, who ran it
and which models it now holds (for routing). Model files are read from the worker's own
disk, at the configured paths.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicedrop import logs
from voicedrop.config import Settings
from voicedrop.manifest import Manifest
from voicedrop.pipeline.device_choice import make_device
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.neighbours import watch_card
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.pipeline.runner import JobInput, JobRunner, Outcome
from voicedrop.report import WorkerRecord
from voicedrop.script import Script


@dataclass(frozen=True)
class Work:
    """What the head sends: one attempt of one job, with the files it names."""

    job_id: str
    attempt: int
    manifest: Manifest
    script: Script | None = None
    reference: tuple[str, bytes] | None = None  # file name, content


@dataclass(frozen=True)
class Done:
    """What comes back: the attempt's outcome and outputs, and the worker's state."""

    job_id: str
    attempt: int
    outcome: Outcome
    files: dict[str, bytes]
    worker: WorkerRecord
    resident: frozenset[str]  # models in memory (device or warm tier) after the job


def with_policy(settings: Settings, policy: str | None) -> Settings:
    if policy is None:
        return settings
    residency = settings.residency.model_copy(update={"policy": policy})
    return settings.model_copy(update={"residency": residency})


NODE_CONFIG = "VOICEDROP_NODE_CONFIG"
NODE_KEYS = frozenset({"model_roots", "engines", "voices", "models", "device"})


def on_this_node(settings: Settings) -> Settings:
    """The head's settings, with what this node sets for itself: `$VOICEDROP_NODE_CONFIG`
    (in the environment `ray start` ran in, on this node) names a TOML file that may set
    `model_roots`, `[engines.*]`, `[voices.*]`, `[models.*]` and `device` — where the
    head's model paths do not exist on this host."""
    path = os.environ.get(NODE_CONFIG)
    return settings if not path else settings.overlaid(Path(path), NODE_KEYS)


class Worker:
    def __init__(
        self,
        settings: Settings,
        index: int,
        policy: str | None = None,
        scratch_prefix: str | None = None,
        *,
        own_state: bool = True,
    ) -> None:
        """`own_state`: footprints and the clip cache in a state directory of its own (a Ray
        actor, maybe on another host); the device worker process shares its daemon's, so
        what it learns and renders outlives it."""
        prefix = scratch_prefix or f"voicedrop-worker{index}-"
        self.scratch = Path(tempfile.mkdtemp(prefix=prefix))
        settings = with_policy(on_this_node(settings), policy)
        if own_state:
            settings = settings.model_copy(update={"state_dir": self.scratch / "state"})
        logs.configure(settings.log_format, settings.log_level)
        self.settings = settings
        self.device = make_device(settings.device)
        self.manager = ResidencyManager.from_settings(settings, self.device)
        self.over = threading.Event()  # the card's other programs need what this process holds
        watch_card(settings, self.manager, always=True, on_over=self.over.set)
        self.runner = JobRunner(settings, build_engines(settings), self.manager)
        self.record = WorkerRecord(
            actor=f"worker-{index}",
            node=_node_name(),
            address=_node_address(),
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES") or None,
            device=self.device.name,
            policy=settings.policy,
        )
        self.current: str | None = None

    def run(self, work: Work) -> Done:
        out = self.scratch / f"{work.job_id}.{work.attempt}"
        out.mkdir(parents=True)
        self.current = work.job_id
        try:
            reference = None
            if work.reference is not None:
                name, data = work.reference
                reference = out / "input" / Path(name).name
                reference.parent.mkdir()
                reference.write_bytes(data)
            job = JobInput(work.job_id, work.manifest, reference, out / "out", work.script)
            outcome = self.runner.run(job, lambda _stage: None)
            files = {}
            if outcome.error is None:
                files = {o.file: (out / "out" / o.file).read_bytes() for o in outcome.outputs}
        finally:
            self.current = None
            shutil.rmtree(out, ignore_errors=True)
        resident = frozenset(self.manager.in_memory_keys())
        return Done(work.job_id, work.attempt, outcome, files, self.record, resident)

    def run_here(
        self,
        job: JobInput,
        progress: Callable[[str], None],
        upcoming: Callable[[], Sequence[ModelSpec]] = list,
    ) -> Outcome:
        """One attempt of a job whose folders are on this host (the device worker process:
        cluster/child.py): the outputs go straight into its folder."""
        self.current = job.job_id
        try:
            outcome = self.runner.run(job, progress, upcoming)
        finally:
            self.current = None
        outcome.worker = self.record
        return outcome

    def status(self) -> dict[str, Any]:
        """For `voicedrop status`: who, where, the seven VRAM stats, models, current job."""
        return {
            **self.record.model_dump(),
            "pid": os.getpid(),
            "job_id": self.current,
            "vram": self.manager.get_vram_usage().model_dump(),
            "models": {k: v.model_dump() for k, v in self.manager.models().items()},
            "card": self.card(),
        }

    def card(self) -> dict[str, Any] | None:
        """The last reading of the card by the neighbour watch (None: none watches)."""
        watch = self.manager.watch
        return watch.describe() if watch is not None else None

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.manager.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _node_address() -> str | None:
    """The node's IP address as Ray knows it (a host's own, not loopback)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return str(ray.util.get_node_ip_address())
    return None


def _node_name() -> str:
    """The host name, and inside a Ray actor the start of Ray's node id (two nodes may
    share a host)."""
    ray = sys.modules.get("ray")  # the actor's process has it; this module never imports it
    host = socket.gethostname()
    if ray is not None and ray.is_initialized():
        return f"{host}/{ray.get_runtime_context().get_node_id()[:8]}"
    return host
