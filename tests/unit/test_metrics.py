"""Prometheus metrics from job reports and the daemon's status."""

from __future__ import annotations

from voicedrop.metrics import Metrics
from voicedrop.report import ErrorInfo, JobReport, ModelEvent, ModelView, StageRecord, VramSnapshot
from voicedrop.spool.status import DaemonStatus

VRAM = {
    "available": True,
    "low_vram_mode": True,
    "allocated_gb": 1.5,
    "reserved_gb": 2.0,
    "free_gb": 4.0,
    "total_gb": 6.0,
    "cached_models": 1,
}


def report(**fields) -> JobReport:
    base = {
        "job_id": "j",
        "status": "done",
        "source": "j.json",
        "attempt": 1,
        "manifest": {"tts": {"engine": "xtts"}},
        "vram": VramSnapshot.model_validate({"before": VRAM, "after": VRAM}),
        "timings": {"total_s": 3.5},
    }
    return JobReport.model_validate(base | fields)


def event(kind: str, key: str, seconds: float, reason: str | None = None) -> ModelEvent:
    return ModelEvent.model_validate(
        {"event": kind, "key": key, "from": "disk", "to": "device", "bytes": 1, "seconds": seconds,
         "reason": reason}
    )  # fmt: skip


def sample(metrics: Metrics, line: str) -> bool:
    return line in metrics.exposition().decode()


def test_jobs_stages_and_model_moves_are_counted_per_label():
    metrics = Metrics()
    metrics.observe(
        report(
            stages=[StageRecord(name="tts", engine="xtts", seconds=3.0)],
            events=[event("load", "xtts", 0.4), event("promote", "hubert", 0.01)],
        )
    )
    oom = ErrorInfo(code="out_of_memory", message="no room", kind="transient")
    metrics.observe(
        report(status="failed", error=oom, events=[event("evict", "f5tts", 0.1, "out of memory")])
    )
    assert sample(metrics, 'voicedrop_jobs_total{code="",status="done"} 1.0')
    assert sample(metrics, 'voicedrop_jobs_total{code="out_of_memory",status="failed"} 1.0')
    assert sample(metrics, 'voicedrop_job_seconds_count{engine="xtts"} 2.0')
    assert sample(metrics, 'voicedrop_stage_seconds_sum{engine="xtts",stage="tts"} 3.0')
    assert sample(metrics, 'voicedrop_model_events_total{event="load",model="xtts"} 1.0')
    assert sample(metrics, 'voicedrop_model_promote_seconds_count{model="hubert"} 1.0')
    assert sample(metrics, 'voicedrop_oom_ladder_steps_total{step="evict"} 1.0')
    assert sample(metrics, 'voicedrop_oom_ladder_steps_total{step="failed"} 1.0')
    assert not sample(Metrics(), 'voicedrop_jobs_total{code="",status="done"} 1.0'), "shared"


def view(tier: str, host_bytes: int = 0) -> ModelView:
    return ModelView(tier=tier, device_bytes=0, host_bytes=host_bytes, loads=1, promotes=0,
                     last_load_s=None, last_peak_bytes=None)  # fmt: skip


def test_status_sets_queue_device_and_tier_gauges():
    metrics = Metrics()
    models = {"xtts": view("host", host_bytes=2048), "vocos": view("device")}
    status = DaemonStatus(state="running", vram=VRAM, models=models)
    metrics.status(status, {"inbox": 3, "work": 1})
    assert sample(metrics, 'voicedrop_queue_jobs{folder="inbox"} 3.0')
    assert sample(metrics, "voicedrop_job_running 1.0")
    assert sample(metrics, 'voicedrop_device_bytes{kind="total"} 6.442450944e+09')
    assert sample(metrics, "voicedrop_warm_tier_bytes 2048.0")
    assert sample(metrics, 'voicedrop_model_resident{model="xtts",tier="host"} 1.0')
    metrics.status(DaemonStatus(state="idle", models={"xtts": view("disk")}), {})
    assert not sample(metrics, 'voicedrop_model_resident{model="xtts",tier="host"} 1.0')


def test_the_device_worker_and_the_cards_other_programs_are_gauged():
    metrics = Metrics()
    worker = {
        "kind": "process",
        "state": "busy",
        "rss_bytes": 900 * 2**20,
        "starts": 3,
        "lost": 1,
        "card": {"nvml": True, "others": [{"pid": 9, "name": "blender", "bytes": 2**30}]},
    }
    metrics.status(DaemonStatus(state="running", workers=[worker]), {})
    assert sample(metrics, 'voicedrop_device_worker{state="busy"} 1.0')
    assert sample(metrics, 'voicedrop_device_worker{state="ready"} 0.0')
    assert sample(metrics, "voicedrop_device_worker_rss_bytes 9.437184e+08")
    assert sample(metrics, 'voicedrop_device_worker_processes{count="lost"} 1.0')
    assert sample(metrics, "voicedrop_card_others_bytes 1.073741824e+09")
