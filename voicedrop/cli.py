"""The command line: `voicedrop run | serve | submit | status | validate | schema | models |
selftest`. Parses arguments, loads the settings once, installs the signal handlers (only
here), and turns errors into exit codes: 2 for a bad configuration or manifest, 4 when
another daemon has the state directory."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import voicedrop
from voicedrop.config import Settings, load_settings
from voicedrop.errors import AlreadyRunningError, ConfigError
from voicedrop.manifest import schema
from voicedrop.spool.jobs import Spool


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voicedrop",
        description=(
            "A daemon that watches a drop folder and turns JSON job manifests into speech "
            "(XTTS v2, F5-TTS or espeak, optionally converted with RVC), writing the audio "
            "and a report to an outbox. Its residency manager runs models that need "
            "10-16 GB on a 4-6 GB GPU (LOW_VRAM=true)."
        ),
        epilog="Start with `voicedrop run --once` on a spool; see README.md and docs/.",
    )
    p.add_argument("--version", action="version", version=f"voicedrop {voicedrop.__version__}")
    p.add_argument("--config", type=Path, help="config.toml (default: $VOICEDROP_CONFIG)")
    p.add_argument("--spool", type=Path, help="spool root (default: config, $VOICEDROP_SPOOL)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--once", action="store_true", help="process the inbox, then exit")
    run.add_argument("--http", metavar="HOST:PORT", help="serve the HTTP API too ([http] listen)")
    run.add_argument(
        "--ray", metavar="ADDRESS", help="run jobs on Ray workers: auto, HOST:PORT, local ([ray])"
    )
    serve = sub.add_parser("serve", help="serve the HTTP API only (a daemon runs elsewhere)")
    serve.add_argument("--http", metavar="HOST:PORT", help="where ([http] listen)")
    submit = sub.add_parser("submit", help="drop a manifest into the inbox atomically")
    submit.add_argument("file", type=Path, help="a manifest (its reference recording goes along)")
    submit.add_argument("--wait", action="store_true", help="wait for the report")
    submit.add_argument("--timeout", type=float, default=None, help="seconds to wait at most")
    status = sub.add_parser("status", help="queue, current job and VRAM")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.add_argument(
        "--health",
        action="store_true",
        help="only whether the daemon runs and its heartbeat is recent: exit 0, else 1 "
        "(a container's HEALTHCHECK)",
    )
    validate = sub.add_parser("validate", help="check manifests without running them")
    validate.add_argument("files", type=Path, nargs="+", help="manifest files")
    sub.add_parser("schema", help="print the manifest JSON Schema")
    models = sub.add_parser("models", help="check or fetch model files")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("check", help="are the configured model files whole, readable, as hashed?")
    fetch = msub.add_parser("fetch", help="download published weights (needs internet)")
    fetch.add_argument("set", choices=["xtts", "f5tts", "rvc-base"], help="which weights")
    fetch.add_argument("dir", type=Path, help="where to put them (a model root)")
    selftest = sub.add_parser("selftest", help="run every installed engine on tiny models")
    selftest.add_argument("--engines", help="comma-separated: xtts,f5tts,rvc (default: all)")
    selftest.add_argument("--keep", type=Path, help="leave the tiny models and a config here")
    selftest.add_argument("--json", action="store_true", help="machine-readable")
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
    overrides: dict[str, Any] = {"spool": args.spool} if args.spool else {}
    if getattr(args, "ray", None):
        overrides["ray"] = {"address": args.ray}
    broken = False
    try:
        settings = load_settings(args.config, overrides=overrides)
    except ConfigError as exc:
        if args.command != "status":
            return _refused(args.command, exc.message, 2)
        # status must answer even when the configuration is broken: say so, look at the
        # spool that the environment or the command line names, and still exit 2
        print(f"voicedrop: warning: {exc.message}", file=sys.stderr)
        where = {
            k: v for k, v in os.environ.items() if k in ("VOICEDROP_SPOOL", "VOICEDROP_STATE_DIR")
        }
        settings = load_settings(None, env=where, overrides=overrides)
        broken = True
    try:
        handler = {
            "run": _run,
            "serve": _serve,
            "submit": _submit,
            "status": _status,
            "validate": _validate,
            "models": _models,
            "selftest": _selftest,
        }
        code = handler[args.command](settings, args)
        return 2 if broken else code
    except ConfigError as exc:
        return _refused(args.command, exc.message, 2)


def _refused(command: str, message: str, code: int) -> int:
    """Say why a command stops before it starts; its exit code. The daemon's commands
    (`run`, `serve`), when not on a terminal (journald, a container's log collector), say
    it as one JSON log event like every other line they write; anything else, one plain
    line."""
    if command in ("run", "serve") and not sys.stderr.isatty():
        import structlog

        from voicedrop import logs

        if not structlog.is_configured():  # the configuration that names the format failed
            logs.configure()
        log = structlog.get_logger("voicedrop.cli")
        log.error("service.refused", error=message, exit_code=code)
    else:
        print(f"voicedrop: {message}", file=sys.stderr)
    return code


def planner(settings: Settings) -> Any:
    """The check of jobs against this configuration's engines (a bad one stops here: exit 2)."""
    from voicedrop.pipeline.engines import build_engines
    from voicedrop.pipeline.plan import Planner

    return Planner(settings, build_engines(settings))


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from voicedrop import logs
    from voicedrop.daemon.service import Service

    as_json = logs.setup_daemon(settings.log_format, settings.log_level)
    overrides: dict[str, Any] = {"spool": args.spool} if args.spool else {}
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
    http = None
    if args.http or settings.http.listen:
        from voicedrop.api.app import create_app
        from voicedrop.api.desk import Desk
        from voicedrop.api.server import HttpServer, listen_address

        host, port = listen_address(settings, args.http)
        desk = Desk(lambda: (service.settings, service.runner.planner), lambda: not stop.is_set())
        http = HttpServer(create_app(desk, service.metrics), host, port, settings.http.token)
        http.start()
    try:
        code = service.run(stop, once=args.once)
    except AlreadyRunningError as exc:
        return _refused("run", exc.message, 4)
    finally:
        if http is not None:
            http.close()
            desk.close()
    if args.once:  # what this run did (the exit status is the daemon's, not the jobs')
        _summary(service.attempts.ran, service.spool, as_json)
    return code


def _summary(ran: dict[str, int], spool: Spool, as_json: bool) -> None:
    counts = {k: ran.get(k, 0) for k in ("done", "failed", "duplicate")}
    if as_json:  # every line a JSON object: the summary is an event like the others
        import structlog

        where = {"outbox": str(spool.outbox), "failed_dir": str(spool.failed)}
        structlog.get_logger("voicedrop.cli").info("run.summary", **counts, **where)
        return
    print(
        f"{counts['done']} done in {spool.outbox}\n{counts['failed']} failed in {spool.failed}"
        + (f"\n{counts['duplicate']} duplicate(s) not run again" if counts["duplicate"] else "")
    )


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """The HTTP API alone: it drops jobs into the spool that a daemon elsewhere serves."""
    from voicedrop import logs
    from voicedrop.api.app import create_app
    from voicedrop.api.desk import Desk
    from voicedrop.api.server import HttpServer, listen_address

    logs.setup_daemon(settings.log_format, settings.log_level)
    host, port = listen_address(settings, args.http)
    jobs = planner(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    desk = Desk(lambda: (settings, jobs))
    with HttpServer(create_app(desk), host, port, settings.http.token):
        stop.wait()
    desk.close()
    return 0


def _submit(settings: Settings, args: argparse.Namespace) -> int:
    from voicedrop.client import submit, wait

    result = submit(settings, planner(settings), args.file)
    if isinstance(result, list):
        for problem in result:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 2
    print(f"submitted {args.file} as job {result}")
    return wait(Spool.from_settings(settings), result, args.timeout) if args.wait else 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from voicedrop.client import render_status, status_report

    if args.health:
        from voicedrop.spool.status import live_status

        daemon = live_status(settings.state_path)
        ready = daemon is not None and daemon.ready
        print("ready" if ready else "not ready: " + ("no daemon" if daemon is None else "stale"))
        return 0 if ready else 1
    out = status_report(settings)
    print(json.dumps(out, indent=2) if args.json else render_status(out, settings.spool))
    return 0


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    """Check manifests against the configuration (which is checked first: exit 2 if bad)."""
    from voicedrop.client import check_manifest

    jobs = planner(settings)
    bad = 0
    for path in args.files:
        _, problems = check_manifest(path, settings, jobs)
        bad += bool(problems)
        for problem in problems or ["ok"]:
            print(f"{path}: {problem}")
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
