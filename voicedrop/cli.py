"""`voicedrop run | submit | status | validate | schema | models | selftest`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from voicedrop.config import Settings, load_settings
from voicedrop.daemon.spool import Spool, checked_reference, job_stem
from voicedrop.errors import AlreadyRunningError, ConfigError, ManifestError
from voicedrop.manifest import parse_manifest, schema
from voicedrop.report import VramStats

SEED_FIELDS = tuple(VramStats.model_fields)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voicedrop", description=__doc__)
    p.add_argument("--config", type=Path, help="config.toml (default: $VOICEDROP_CONFIG)")
    p.add_argument("--spool", type=Path, help="spool root (default: config, $VOICEDROP_SPOOL)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="process the inbox, then exit")
    submit = sub.add_parser("submit", help="drop a manifest into the inbox atomically")
    submit.add_argument("file", type=Path)
    submit.add_argument("--wait", action="store_true", help="wait for the report")
    submit.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    status = sub.add_parser("status", help="queue, current job and VRAM")
    status.add_argument("--json", action="store_true")
    validate = sub.add_parser("validate", help="check manifests without running them")
    validate.add_argument("files", type=Path, nargs="+")
    sub.add_parser("schema", help="print the manifest JSON Schema")
    models = sub.add_parser("models", help="check or fetch model files")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("check", help="are the configured model files whole, readable, as hashed?")
    fetch = msub.add_parser("fetch", help="download published weights (needs internet)")
    fetch.add_argument("set", choices=["xtts", "f5tts", "rvc-base"])
    fetch.add_argument("dir", type=Path)
    selftest = sub.add_parser("selftest", help="run every installed engine on tiny models")
    selftest.add_argument("--engines", help="comma-separated: xtts,f5tts,rvc (default: all)")
    selftest.add_argument("--keep", type=Path, help="leave the tiny models and a config here")
    selftest.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if (args.command, getattr(args, "models_command", None)) != ("models", "fetch"):
        # Only `models fetch` may reach a model hub: the libraries read these when imported,
        # which happens later, when an engine loads. A user's explicit setting wins.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.command == "schema":
        print(json.dumps(schema(), indent=2))
        return 0
    try:
        settings = load_settings(args.config, overrides={"spool": args.spool} if args.spool else {})
        handler = {
            "run": _run,
            "submit": _submit,
            "status": _status,
            "validate": _validate,
            "models": _models,
            "selftest": _selftest,
        }
        return handler[args.command](settings, args)
    except ConfigError as exc:
        print(f"voicedrop: {exc.message}", file=sys.stderr)
        return 2


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from voicedrop import logs
    from voicedrop.daemon.service import Service

    logs.configure(settings.log_format, settings.log_level)
    overrides = {"spool": args.spool} if args.spool else {}
    service = Service(settings, load=lambda: load_settings(args.config, overrides=overrides))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        # Only signal-safe work here: the loop reads `stop` without its lock, and
        # the wake-up is a byte written to a pipe (see daemon/wakeup.py).
        stop.set()
        service.wake.set()

    def on_hangup(signum: int, _frame: Any) -> None:
        service.reload_requested = True  # applied between jobs, never inside one
        service.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    try:
        code = service.run(stop, once=args.once)
    except AlreadyRunningError as exc:
        print(f"voicedrop: {exc.message}", file=sys.stderr)
        return 4
    if args.once:
        counts = service.spool.counts()
        print(
            f"{counts['outbox']} done in {service.spool.outbox}\n"
            f"{counts['failed']} failed in {service.spool.failed}"
        )
    return code


def _submit(settings: Settings, args: argparse.Namespace) -> int:
    spool = Spool.from_settings(settings)
    spool.ensure()
    raw = args.file.read_bytes()
    try:
        manifest = parse_manifest(
            raw,
            max_bytes=settings.limits.max_manifest_bytes,
            max_text_chars=settings.limits.max_text_chars,
        )
    except ManifestError as exc:
        print(f"{args.file}: {exc.message}", file=sys.stderr)
        return 2
    tag = uuid.uuid4().hex[:8]
    ref = manifest.tts.reference_path
    if ref:
        # The reference travels first, under a name of its own, so the manifest never
        # arrives without it and a later submit cannot replace it while this job waits.
        unique = f"refs/{tag}-{Path(ref).name}"
        _drop(spool, args.file.parent / ref, spool.inbox / unique)
        data = json.loads(raw)
        data["tts"]["voice"] = unique
        raw = json.dumps(data, ensure_ascii=False, indent=1).encode()
    name = f"{job_stem(args.file.name)}-{tag}.json"
    _drop(spool, raw, spool.inbox / name)
    job_id = job_stem(name)
    print(f"submitted {args.file} as job {job_id}")
    return _wait(spool, job_id, args.timeout) if args.wait else 0


def _drop(spool: Spool, src: Path | bytes, dst: Path) -> None:
    """Write into inbox/.incoming, then rename into place: the daemon sees it complete."""
    tmp = spool.incoming / f"{uuid.uuid4().hex}.partial"
    if isinstance(src, bytes):
        tmp.write_bytes(src)
    else:
        shutil.copyfile(src, tmp)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dst)


def _wait(spool: Spool, job_id: str, timeout: float | None) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = ""
    while deadline is None or time.monotonic() < deadline:
        for folder in (spool.outbox, spool.failed):
            report = folder / job_id / "report.json"
            if report.exists():
                status = json.loads(report.read_text())["status"]
                print(f"{status}: {report}")
                return 1 if status == "failed" else 0
        line = _progress_line(spool, job_id)
        if line != shown:
            print(line, flush=True)
            shown = line
        time.sleep(0.2)
    print(f"timed out waiting for job {job_id}", file=sys.stderr)
    return 3


def _progress_line(spool: Spool, job_id: str) -> str:
    status = _daemon_status(spool)
    if status.get("job_id") == job_id:
        return f"running: {status.get('stage') or 'starting'}"
    try:
        attempts = json.loads((spool.work / job_id / "job.json").read_text())["attempts"]
    except (OSError, ValueError, KeyError):
        attempts = 0
    if attempts:
        return f"attempt {attempts} failed transiently: waiting for a retry (see the log)"
    if not status.get("alive"):
        return "queued (no daemon is running)"
    return f"queued: {spool.counts()['inbox']} in inbox"


def _daemon_status(spool: Spool) -> dict[str, Any]:
    try:
        status: dict[str, Any] = json.loads((spool.state / "status.json").read_text())
    except (OSError, ValueError):
        return {"alive": False}
    alive = status.get("state") != "stopped"
    try:
        os.kill(int(status["pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        alive = False
    status["alive"] = alive
    return status


def _status(settings: Settings, args: argparse.Namespace) -> int:
    spool = Spool.from_settings(settings)
    daemon = _daemon_status(spool)
    vram = daemon.get("vram") if daemon["alive"] else None
    if vram is None:  # no daemon: say so, without importing torch
        vram = dict.fromkeys(SEED_FIELDS, 0.0) | {
            "available": False,
            "low_vram_mode": settings.low_vram,
            "cached_models": 0,
        }
    out = {
        "daemon": "running" if daemon["alive"] else "not running",
        "queue": spool.counts(),
        "current_job": daemon.get("job_id") if daemon["alive"] else None,
        "stage": daemon.get("stage") if daemon["alive"] else None,
        "vram": {k: vram[k] for k in SEED_FIELDS},
        "models": daemon.get("models", {}) if daemon["alive"] else {},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"daemon:  {out['daemon']}  (spool {settings.spool})")
    print("queue:   " + "  ".join(f"{k} {v}" for k, v in out["queue"].items()))
    print(f"job:     {out['current_job'] or '-'}" + (f" ({out['stage']})" if out["stage"] else ""))
    print("vram:    " + "  ".join(f"{k}={v}" for k, v in out["vram"].items()))
    for key, view in out["models"].items():
        print(
            f"model:   {key}: {view['tier']} ({view['device_bytes'] + view['host_bytes']} B, "
            f"{view['loads']} loads, {view['promotes']} promotes)"
        )
    return 0


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    """Check manifests against the configuration (which is checked first: exit 2 if bad)."""
    from voicedrop.errors import EngineUnavailableError
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.stages import check_job, resolve_voice

    engines = build_engines(settings)
    bad = 0
    for path in args.files:
        try:
            manifest = parse_manifest(
                path.read_bytes(),
                max_bytes=settings.limits.max_manifest_bytes,
                max_text_chars=settings.limits.max_text_chars,
            )
            ref = manifest.tts.reference_path
            limit = settings.limits.max_reference_bytes
            ref_path = checked_reference(path.parent, ref, limit) if ref else None
            voice = resolve_voice(manifest, settings, ref_path)
            check_job(manifest, settings, engines, voice)
        except ManifestError as exc:
            bad += 1
            for problem in exc.problems:
                print(f"{path}: {problem}")
        except EngineUnavailableError as exc:
            bad += 1
            print(f"{path}: {exc.field}: {exc.message}")
        except OSError as exc:
            bad += 1
            print(f"{path}: cannot read: {exc.strerror}")
        else:
            print(f"{path}: ok")
    return 1 if bad else 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    if args.models_command == "fetch":
        from voicedrop.fetch import fetch

        snippet = fetch(args.set, args.dir)
        print(f"downloaded {args.set} into {args.dir}; add to config.toml:\n\n{snippet}")
        return 0
    from voicedrop.modelfiles import ModelFile, inspect
    from voicedrop.pipeline.engines import build_engines

    engines = build_engines(settings)  # a bad configuration stops here (exit 2)
    items: list[ModelFile] = []
    for tts in engines.tts.values():
        items += tts.files()
    for convert in engines.convert.values():
        items += convert.files()
    for name, voice in settings.voices.items():
        items += [
            ModelFile(f"voices.{name}.reference", settings.resolve(r)) for r in voice.references
        ]
    for name, model in settings.models.items():
        if model.path is not None:
            items.append(
                ModelFile(f"models.{name}.path", settings.resolve(model.path), model.sha256)
            )
        if model.index is not None:
            items.append(ModelFile(f"models.{name}.index", settings.resolve(model.index)))
    bad = 0
    for item in items:
        problem = inspect(item)
        bad += problem is not None
        print(
            f"{'FAIL' if problem else 'ok  '}  {item.label}: {item.path}"
            + (f": {problem}" if problem else "")
        )
    if not items:
        print("no model files are configured")
    return 1 if bad else 0


def _selftest(settings: Settings, args: argparse.Namespace) -> int:
    from voicedrop import logs
    from voicedrop.selftest import passed, render, run_selftest

    logs.configure("json", "error")
    names = [n.strip() for n in args.engines.split(",")] if args.engines else None
    result = run_selftest(settings, names, args.keep)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if passed(result) else 1
