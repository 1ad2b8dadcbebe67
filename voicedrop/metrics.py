"""Prometheus metrics of one daemon: what its jobs did, its queue, where its models are.

A `Metrics` owns its registry (never prometheus_client's global one). It learns from each
finished job's report (`observe`) and from the daemon's status (`status`), and is read
over HTTP (`/metrics`) or written to a file for node_exporter's textfile collector
(`write_textfile`, an atomic replace). Names start with `voicedrop_`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    write_to_textfile,
)

from voicedrop.config import GB
from voicedrop.report import JobReport
from voicedrop.spool.status import DaemonStatus

JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
MOVE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
OOM_REASON = "out of memory"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs = Counter(
            "voicedrop_jobs", "Jobs finished, by final status and error code", ["status", "code"],
            registry=r,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "voicedrop_job_seconds", "Seconds per finished job, by TTS engine", ["engine"],
            buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "voicedrop_stage_seconds", "Seconds per stage, by stage and engine",
            ["stage", "engine"], buckets=JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue = Gauge(
            "voicedrop_queue_jobs", "Jobs in the spool, by folder", ["folder"], registry=r
        )
        self.running = Gauge("voicedrop_job_running", "1 while a job runs", registry=r)
        self.model_events = Counter(
            "voicedrop_model_events", "Model moves: load, prefetch, promote, demote, evict, drop",
            ["model", "event"], registry=r,
        )  # fmt: skip
        self.load_seconds = Histogram(
            "voicedrop_model_load_seconds", "Seconds per load from disk", ["model"],
            buckets=MOVE_BUCKETS, registry=r,
        )  # fmt: skip
        self.promote_seconds = Histogram(
            "voicedrop_model_promote_seconds", "Seconds per promote from the warm tier",
            ["model"], buckets=MOVE_BUCKETS, registry=r,
        )  # fmt: skip
        self.device_bytes = Gauge(
            "voicedrop_device_bytes", "Device memory: allocated, reserved, total", ["kind"],
            registry=r,
        )  # fmt: skip
        self.warm_bytes = Gauge(
            "voicedrop_warm_tier_bytes", "Bytes of models in the host warm tier", registry=r
        )
        self.resident = Gauge(
            "voicedrop_model_resident", "1 for the tier each model is in", ["model", "tier"],
            registry=r,
        )  # fmt: skip
        self.worker = Gauge(
            "voicedrop_device_worker", "1 for the device worker's state: none, starting, "
            "ready, busy", ["state"], registry=r,
        )  # fmt: skip
        self.worker_rss = Gauge(
            "voicedrop_device_worker_rss_bytes", "The device worker's resident memory",
            registry=r,
        )  # fmt: skip
        self.worker_runs = Gauge(
            "voicedrop_device_worker_processes", "Device worker processes: started, lost (ended "
            "with a job on them)", ["count"], registry=r,
        )  # fmt: skip
        self.card_others = Gauge(
            "voicedrop_card_others_bytes", "Card memory other programs hold (NVML)", registry=r
        )
        self.oom_steps = Counter(
            "voicedrop_oom_ladder_steps", "OOM ladder rungs taken: evict (others evicted to "
            "retry), failed (out of memory after the ladder)", ["step"], registry=r,
        )  # fmt: skip

    def observe(self, report: JobReport) -> None:
        """Count a finished job (a final report: done, failed or duplicate)."""
        code = report.error.code if report.error else ""
        self.jobs.labels(report.status, code).inc()
        engine = str((report.manifest or {}).get("tts", {}).get("engine", ""))
        total = report.timings.get("total_s")
        if isinstance(total, int | float):
            self.job_seconds.labels(engine).observe(total)
        for stage in report.stages:
            self.stage_seconds.labels(stage.name, stage.engine or "").observe(stage.seconds)
        for event in report.events:
            self.model_events.labels(event.key, event.event).inc()
            if event.event in ("load", "prefetch"):  # both read the model from disk
                self.load_seconds.labels(event.key).observe(event.seconds)
            elif event.event == "promote":
                self.promote_seconds.labels(event.key).observe(event.seconds)
            elif event.event == "evict" and event.reason == OOM_REASON:
                self.oom_steps.labels("evict").inc()
        if code == "out_of_memory":
            self.oom_steps.labels("failed").inc()

    def status(self, status: DaemonStatus | None, queue: Mapping[str, int]) -> None:
        """Take the daemon's status (None: no daemon runs) and the spool's counts."""
        for folder, count in queue.items():
            self.queue.labels(folder).set(count)
        status = status or DaemonStatus(state="stopped")
        self.running.set(1 if status.state == "running" else 0)
        vram = status.vram
        for kind in ("allocated", "reserved", "total"):
            gb = float(getattr(vram, f"{kind}_gb")) if vram is not None else 0.0
            self.device_bytes.labels(kind).set(gb * GB)
        self.resident.clear()
        for key, view in status.models.items():
            self.resident.labels(key, view.tier).set(1)
        self.warm_bytes.set(sum(view.host_bytes for view in status.models.values()))
        worker = next((w for w in status.workers if w.get("kind") == "process"), None)
        if worker is not None:
            for state in ("none", "starting", "ready", "busy"):
                self.worker.labels(state).set(1 if worker.get("state") == state else 0)
            self.worker_rss.set(worker.get("rss_bytes") or 0)
            self.worker_runs.labels("started").set(worker.get("starts", 0))
            self.worker_runs.labels("lost").set(worker.get("lost", 0))
            card = worker.get("card") or {}
            self.card_others.set(sum(o["bytes"] for o in card.get("others", [])))

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def write_textfile(self, path: Path) -> None:
        """For node_exporter's textfile collector: written aside, then renamed into place."""
        write_to_textfile(str(path), self.registry)
