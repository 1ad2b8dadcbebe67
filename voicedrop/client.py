"""The client side of the spool: check, submit, wait for and read jobs; read the daemon's status.

What `voicedrop validate | submit | status` do. Nothing here runs a job or loads a model:
a manifest is checked against the same engines and configuration the daemon uses (engines
are built, which imports no engine library), then dropped atomically into the inbox.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from voicedrop.config import Settings
from voicedrop.errors import EngineUnavailableError, ManifestError
from voicedrop.intake import JobCheck, read_manifest
from voicedrop.manifest import Manifest
from voicedrop.report import VramStats
from voicedrop.script import read_script
from voicedrop.spool.claimed import job_stem
from voicedrop.spool.jobs import Spool
from voicedrop.spool.private import private_name
from voicedrop.spool.references import checked_reference
from voicedrop.spool.state import JobState, job_state
from voicedrop.spool.status import DaemonStatus, live_status


def check_manifest(
    path: Path, settings: Settings, jobs: JobCheck
) -> tuple[Manifest | None, list[str]]:
    """Parse and check a manifest file as the daemon would; return it and its problems."""
    limit = settings.limits
    try:
        manifest = read_manifest(path, limit, follow_symlinks=True)  # the file the user named
        ref = manifest.tts.reference_path
        ref_path = checked_reference(path.parent, ref, limit.max_reference_bytes) if ref else None
        if manifest.script is not None:
            script = checked_reference(
                path.parent, manifest.script, limit.max_script_bytes, "script"
            )
            read_script(script.read_bytes(), manifest.script, limit)
        jobs.check(manifest, ref_path)
    except ManifestError as exc:
        return None, exc.problems
    except EngineUnavailableError as exc:
        return None, [f"{exc.field}: {exc.message}"]
    except OSError as exc:
        return None, [f"cannot read: {exc.strerror}"]
    except Exception as exc:  # input no check foresaw: a problem to report, never a crash
        return None, [f"cannot be checked: {type(exc).__name__}: {exc}"[:500]]
    return manifest, []


def submit(
    settings: Settings, jobs: JobCheck, path: Path, *, named: bool = False
) -> str | list[str]:
    """Check and drop a manifest (and its reference recording); the job id, or the problems.

    The job id is the file name's stem plus a random 8-hex suffix, so that submitting the
    same file twice makes two jobs (use the manifest's `id` to have duplicates refused);
    `named`: the stem alone (the caller made it unique)."""
    manifest, problems = check_manifest(path, settings, jobs)
    if manifest is None:
        return problems
    spool = Spool.from_settings(settings)
    spool.ensure()
    raw = path.read_bytes()
    tag = uuid.uuid4().hex[:8]
    data = json.loads(raw)
    # The files it names travel first, under names of their own, so the manifest never
    # arrives without them and a later submit cannot replace them while this job waits.
    # The daemon removes them from the inbox once the job has its copies.
    for name, where in (
        (manifest.tts.reference_path, ("tts", "voice")),
        (manifest.script, ("script",)),
    ):
        if name:
            unique = private_name(name, tag)
            _drop(spool, path.parent / name, spool.inbox / unique)
            node = data
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = unique
    raw = json.dumps(data, ensure_ascii=False, indent=1).encode()
    name = f"{job_stem(path.name)}.json" if named else f"{job_stem(path.name)}-{tag}.json"
    _drop(spool, raw, spool.inbox / name)
    return job_stem(name)


def _drop(spool: Spool, src: Path | bytes, dst: Path) -> None:
    """Write into inbox/.incoming, then rename into place: the daemon sees it complete."""
    tmp = spool.incoming / f"{uuid.uuid4().hex}.partial"
    if isinstance(src, bytes):
        tmp.write_bytes(src)
    else:
        shutil.copyfile(src, tmp)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dst)


def wait(spool: Spool, job_id: str, timeout: float | None) -> int:
    """Show progress until the job's report exists: 0 done or duplicate, 1 failed, 3 timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = ""
    while deadline is None or time.monotonic() < deadline:
        daemon = live_status(spool.state)
        state = job_state(spool, job_id, daemon)
        if state is not None and state.final and state.report is not None:
            assert state.folder is not None
            print(f"{state.status}: {state.folder / 'report.json'}")
            if state.status == "failed":
                error = state.error
                if error is not None:
                    where = f"{error.field}: " if error.field else ""
                    print(f"  {error.code}: {where}{error.message}")
                return 1
            return 0
        line = progress_line(spool, state, daemon)
        if line != shown:
            print(line, flush=True)
            shown = line
        time.sleep(0.2)
    print(f"timed out waiting for job {job_id}", flush=True)
    return 3


def progress_line(spool: Spool, state: JobState | None, daemon: DaemonStatus | None) -> str:
    if state is not None and state.stage is not None:
        return f"running: {state.stage}"
    if state is not None and daemon is not None and daemon.job_id == state.job_id:
        return "running: starting"
    if state is not None and state.attempts and state.failed_attempts >= state.attempts:
        return f"attempt {state.attempts} failed transiently: waiting for a retry (see the log)"
    if state is not None and state.attempts:  # claimed; the daemon has not said so yet
        return "running: starting"
    if daemon is None:
        return "queued (no daemon is running)"
    return f"queued: {spool.counts()['inbox']} in inbox"


def status_report(settings: Settings) -> dict[str, Any]:
    """What `voicedrop status` shows: queue, the running job, the seven VRAM fields, models."""
    spool = Spool.from_settings(settings)
    daemon = live_status(spool.state)
    return {
        "daemon": "running" if daemon else "not running",
        "queue": spool.counts(),
        "current_job": daemon.job_id if daemon else None,
        "stage": daemon.stage if daemon else None,
        "vram": vram_view(settings, daemon),
        "models": {k: v.model_dump() for k, v in daemon.models.items()} if daemon else {},
        "workers": daemon.workers if daemon else [],
    }


def vram_view(settings: Settings, daemon: DaemonStatus | None) -> dict[str, Any]:
    """The seven VRAM fields from the daemon's status; without a daemon, say so
    (without importing torch)."""
    if daemon is not None and daemon.vram is not None:
        return daemon.vram.model_dump()
    return VramStats(
        available=False,
        low_vram_mode=settings.low_vram,
        allocated_gb=0.0,
        reserved_gb=0.0,
        free_gb=0.0,
        total_gb=0.0,
        cached_models=0,
    ).model_dump()


def render_status(out: dict[str, Any], spool_root: Path) -> str:
    lines = [
        f"daemon:  {out['daemon']}  (spool {spool_root})",
        "queue:   " + "  ".join(f"{k} {v}" for k, v in out["queue"].items()),
        f"job:     {out['current_job'] or '-'}" + (f" ({out['stage']})" if out["stage"] else ""),
        "vram:    " + "  ".join(f"{k}={v}" for k, v in out["vram"].items()),
    ]
    for key, view in out["models"].items():
        leaves = view.get("leaves_in_s")
        lines.append(
            f"model:   {key}: {view['tier']} ({view['device_bytes'] + view['host_bytes']} B, "
            f"{view['loads']} loads, {view['promotes']} promotes)"
            + (f", leaves the GPU in {leaves:g} s if idle" if leaves is not None else "")
        )
    for w in out.get("workers", []):  # `run --ray`: one line per actor, then its models
        if w.get("kind") == "process":
            lines.append(_device_worker_line(w))
            if w.get("card"):
                lines.append(_card_line(w["card"]))
            continue
        vram = w.get("vram") or {}
        lines.append(
            f"worker:  {w.get('actor', w['index'])} on {w.get('node', '?')} "
            f"(GPU {w.get('gpu') or '-'}, {w.get('policy', '?')}): {w['state']}"
            + (f" {w['job_id']}" if w.get("job_id") else "")
            + (
                f"  allocated_gb={vram.get('allocated_gb')} total_gb={vram.get('total_gb')}"
                if vram
                else ""
            )
        )
        for key, view in (w.get("models") or {}).items():
            lines.append(f"           {key}: {view['tier']}")
    return "\n".join(lines)


def _card_line(card: dict[str, Any]) -> str:
    """The card as NVML last read it: what voicedrop and the other programs hold."""
    if not card.get("nvml"):
        return f"card:    no per-process figures ({card.get('why')}): free memory only"
    gb = 2**30
    others = ", ".join(
        f"{o['name'] or 'pid'} ({o['pid']}) {o['bytes'] / gb:.2f} GB" for o in card["others"]
    )
    return (
        f"card:    {card['free_bytes'] / gb:.2f} of {card['total_bytes'] / gb:.2f} GB free; "
        f"voicedrop {card['ours_bytes'] / gb:.2f} GB; others: {others or 'none'}"
    )


def _device_worker_line(w: dict[str, Any]) -> str:
    """The device worker process (`[residency] worker = "process"`), in one line."""
    if w.get("state") == "none":
        return "worker:  device worker process: none (one starts with the next job)"
    rss = w.get("rss_bytes")
    parts = [f"pid {w.get('pid')}"] + ([f"{rss / 2**20:.0f} MiB"] if rss else [])
    if w.get("exits_in_s") is not None:
        parts.append(f"exits in {w['exits_in_s']:g} s if idle")
    models = ", ".join(w.get("models") or []) or "no model"
    return f"worker:  device worker process: {w.get('state')} ({', '.join(parts)}); {models}"
