"""Why the daemon died during a job, as far as the evidence tells: the job's fault or not.

A job that crashes the daemon every time it runs must end (failed, `too_many_attempts`)
instead of crash-looping the service; a job that merely happened to be running when
somebody killed the daemon must not be blamed. While a job's stages run (the only time
its own content drives the engines), its work folder holds evidence:

- `.running`: written when the stages begin, removed when they end — with the pid, the
  boot id and the kernel's count of OOM kills (`/proc/vmstat` `oom_kill`) at that moment;
- `.fatal`: faulthandler's traceback, written by the dying process on SIGSEGV, SIGBUS,
  SIGFPE, SIGILL or SIGABRT (systemd's watchdog kills with SIGABRT);
- `.stopping`: a stop (SIGTERM, SIGINT) was asked for while the job ran.

When a job comes back from `work/` whose `.running` is still there, the attempt died in
its stages, and the rule is, in order:

1. a fatal-signal traceback → the job's fault (charged);
2. a stop had been asked for → stopped from outside (systemd's stop timeout): not charged;
3. another boot id → the machine restarted (a power cut): not charged;
4. the kernel's OOM kill count grew → killed for memory, most likely this job's: charged
   (an OOM kill anywhere on the machine while the job ran counts against it);
5. none of these → killed from outside (kill -9, a container stopped): not charged.

A death outside the stages (claiming, reading inputs, committing) is never charged: no
`.running` is left. A job charged `max_attempts` times fails; one interrupted more than
MAX_INTERRUPTED times fails too, so that even a death no evidence explains cannot loop
forever. Where /proc gives no boot id or OOM count, rules 3 and 4 cannot apply.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

RUNNING = ".running"
FATAL = ".fatal"
STOPPING = ".stopping"
MAX_INTERRUPTED = 20


@dataclass(frozen=True)
class Death:
    """A previous attempt that died in its stages: whether it is charged, and why."""

    charged: bool
    cause: str  # fatal_signal | stopped | restarted | oom_killed | killed
    detail: str
    evidence: str = ""  # the fatal-signal traceback, for the log


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def boot_id() -> str | None:
    text = _read(Path("/proc/sys/kernel/random/boot_id"))
    return text.strip() if text else None


def oom_kills() -> int | None:
    for line in (_read(Path("/proc/vmstat")) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill":
            return int(value)
    return None


class Witness:
    """Leaves the evidence of the job whose stages run now (one at a time per process)."""

    def __init__(self) -> None:
        self._current: Path | None = None
        self._stopping = False
        self._boot_id = boot_id()  # the same for the process's whole life

    @contextmanager
    def watching(self, job_dir: Path) -> Iterator[None]:
        """Around a job's stages. A folder that cannot be written (a full disk) only
        costs the evidence, never the job. Cheap: a few system calls per job."""
        fatal = -1
        enabled_before = faulthandler.is_enabled()  # e.g. PYTHONFAULTHANDLER=1
        try:
            fatal = os.open(job_dir / FATAL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            faulthandler.enable(fatal, all_threads=True)
            marker = {"pid": os.getpid(), "boot_id": self._boot_id, "oom_kills": oom_kills()}
            _write(job_dir / RUNNING, json.dumps(marker).encode())
        except OSError:
            pass
        self._current = job_dir
        if self._stopping:
            self.stopping()
        try:
            yield
        finally:
            self._current = None
            if fatal >= 0:
                faulthandler.disable()
                os.close(fatal)
                if enabled_before and sys.__stderr__ is not None:
                    faulthandler.enable(sys.__stderr__, all_threads=True)
            for name in (RUNNING, FATAL) + ((STOPPING,) if self._stopping else ()):
                with suppress(OSError):
                    (job_dir / name).unlink(missing_ok=True)

    def stopping(self) -> None:
        """A stop was asked for: note it in the running job's folder, if any (and in every
        job's that starts later: the stop is still under way)."""
        self._stopping = True
        current = self._current
        if current is not None:
            with suppress(OSError):
                (current / STOPPING).touch()


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def verdict(job_dir: Path) -> Death | None:
    """What the evidence in `job_dir` says of an attempt that did not end (None: it did
    not die in its stages), by the rule above; the evidence is cleared."""
    running = _read(job_dir / RUNNING)
    if running is None:
        return None
    try:
        marker = json.loads(running)
    except ValueError:
        marker = {}
    fatal = (_read(job_dir / FATAL) or "").strip()
    stopped = (job_dir / STOPPING).exists()
    for name in (RUNNING, FATAL, STOPPING):
        (job_dir / name).unlink(missing_ok=True)
    if fatal:
        first = fatal.splitlines()[0]
        detail = f"the daemon crashed while this job ran ({first})"
        return Death(True, "fatal_signal", detail, fatal[:4000])
    if stopped:
        return Death(False, "stopped", "the daemon was asked to stop, then killed, mid-job")
    then_boot, now_boot = marker.get("boot_id"), boot_id()
    if then_boot and now_boot and then_boot != now_boot:
        return Death(False, "restarted", "the machine restarted while this job ran")
    then_oom, now_oom = marker.get("oom_kills"), oom_kills()
    if isinstance(then_oom, int) and now_oom is not None and now_oom > then_oom:
        return Death(
            True,
            "oom_killed",
            f"the kernel's OOM killer killed {now_oom - then_oom} process(es) while this job "
            "ran: most likely the daemon, for this job's memory",
        )
    return Death(False, "killed", "the daemon was killed from outside while this job ran")
