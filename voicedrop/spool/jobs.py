"""The on-disk job lifecycle: inbox → work → outbox | failed.

A job is claimed by an atomic rename of its manifest into `work/<job-id>/`.
Results are staged in `work/<job-id>/out/`, `report.json` last, and the whole
folder is renamed into `outbox/` (or the job folder into `failed/`), so a
reader of the outbox never sees half a job. After a crash, `recover()` finishes
half-done commits and hands back the jobs that must run again.

Several daemons may share a spool (one per GPU). Each job in work/ is leased by
the daemon that claimed it (leases.py); recovery takes only jobs whose lease it
can take (their owner is gone), so no job is run again while its owner lives.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import structlog

from voicedrop.config import Settings
from voicedrop.fsutil import StateWrites, fsync_dir, remove_orphan_temps, write_atomic
from voicedrop.report import ErrorInfo
from voicedrop.spool import names, private
from voicedrop.spool.claimed import ClaimedJob, JobRecord, Unclaimable, display_name, job_stem
from voicedrop.spool.deaths import Death
from voicedrop.spool.ids import ClientIds
from voicedrop.spool.inbox import InboxFile, list_candidates
from voicedrop.spool.leases import LEASE, Leases, hold_inbox_file
from voicedrop.spool.ledger import Finished, Ledger, mark_of
from voicedrop.spool.references import check_opened, checked_reference, open_beneath
from voicedrop.spool.sent import forget_audio, unheard
from voicedrop.spool.stream import stream_folder

log = structlog.get_logger(__name__)
# What a failed rename of one inbox file means: that file cannot be claimed (its owner,
# the sticky bit, a mount point, another filesystem), not that the spool is in trouble.
UNCLAIMABLE = {errno.EACCES, errno.EPERM, errno.EBUSY, errno.EXDEV, errno.EINVAL, errno.ENOTDIR}


class Spool:
    def __init__(self, root: Path, state: Path | None = None) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.incoming = self.inbox / ".incoming"
        self.work = root / "work"
        self.outbox = root / "outbox"
        self.failed = root / "failed"
        self.state = state if state is not None else root / "state"
        self.ids = ClientIds(root / ".ids", self.outbox, self.work)  # shared by every daemon
        self.leases = Leases()  # the jobs this daemon runs (see leases.py)
        self.ledger = Ledger(root)  # the jobs that ended, newest last (ledger.py)
        self._ledger_writes = StateWrites("ledger of finished jobs")
        self._swept = False  # killed writers' temp files removed (at the first recovery)

    @classmethod
    def from_settings(cls, settings: Settings) -> Spool:
        return cls(settings.spool, settings.state_path)

    def ensure(self) -> None:
        for d in (
            self.inbox,
            self.incoming,
            self.inbox / private.FOLDER,
            self.work,
            self.outbox,
            self.failed,
            self.state,
            self.ids.folder,
        ):
            d.mkdir(parents=True, exist_ok=True)

    def restore(self) -> list[str]:
        """Make again the spool's own folders that vanished while it ran (a clean-up
        script, an operator's `rm -r`); the names made. Only while its inbox is there: a
        spool whose share is unmounted must not be papered over with empty local folders
        (jobs written there would vanish again when the share comes back)."""
        if not self.inbox.is_dir():
            return []
        made = []
        for d in (self.work, self.outbox, self.failed, self.ids.folder):
            try:
                d.mkdir()
                made.append(d.name)
            except FileExistsError:
                pass
        return made

    # ---- inbox ---------------------------------------------------------------------

    def scan_inbox(self) -> list[InboxFile]:
        """Candidate manifests, oldest first, from a listing (the daemon's queue keeps an
        index instead: daemon/index.py)."""
        found = list_candidates(self.inbox) or []
        return sorted(found, key=lambda f: (f.mtime_ns, f.path.name))

    def _new_job_id(self, source: str) -> str:
        stem = job_stem(source)
        candidate, n = stem, 1
        while any((d / candidate).exists() for d in (self.work, self.outbox, self.failed)):
            n += 1
            candidate = f"{stem}-{n}"
        return candidate

    def claim(self, item: InboxFile) -> ClaimedJob | None:
        """Move a manifest into its own, leased work folder; None if another claimer
        (another daemon on this spool) was first; Unclaimable if this entry cannot be
        moved at all. An OSError is the spool's own trouble (a full disk, a share gone).

        The manifest itself is flock'ed first, so two daemons never race for one file
        (the loser would otherwise take the next id, `name-2`, for the same job)."""
        hold = hold_inbox_file(item.path) if item.regular else True
        if hold is False:
            return None
        try:
            while True:
                job_id = self._new_job_id(item.path.name)
                job_dir = self.work / job_id
                try:
                    job_dir.mkdir()
                    break
                except FileExistsError:  # a peer's job of the same name, made just now
                    continue
            if not self.leases.take(job_dir):
                return None  # a peer's recovery holds it and will clear the empty folder
            try:
                os.rename(item.path, job_dir / names.MANIFEST)
            except OSError as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                self.leases.release(job_id)
                if exc.errno == errno.ENOENT:
                    return None
                if exc.errno in UNCLAIMABLE:
                    why = exc.strerror or str(exc)
                    if exc.errno == errno.EXDEV:  # a symlinked inbox on another filesystem
                        why += ": the inbox must be on the spool's filesystem (claims are renames)"
                    raise Unclaimable(item, why) from None
                raise
        finally:
            if isinstance(hold, int):
                os.close(hold)
        # No fsync here: if a power cut undoes the rename, the manifest is back in
        # the inbox and simply runs then. Results are what is made durable.
        source = display_name(item.path.name)
        problem = None if source == item.path.name else "the file name is not valid UTF-8"
        return ClaimedJob(job_id, job_dir, source, name_problem=problem)

    # ---- work ----------------------------------------------------------------------

    def _write_meta(self, job: ClaimedJob) -> None:
        JobRecord.of(job).write(job.dir)

    def _read_job(self, job_dir: Path) -> ClaimedJob:
        record = JobRecord.read(job_dir)
        if record is None:
            return ClaimedJob(job_dir.name, job_dir, job_dir.name + ".json")
        return record.job(job_dir)

    def keep_errors(self, job: ClaimedJob, errors: list[ErrorInfo]) -> ClaimedJob:
        """A job that waits for a retry keeps its attempts' errors with it, on disk: a
        restart during the wait loses none from its final report."""
        kept = replace(job, errors=tuple(errors))
        self._write_meta(kept)
        return kept

    def begin_attempt(self, job: ClaimedJob, death: Death | None = None) -> ClaimedJob:
        """Count an attempt before running, with how the previous one died (if it died in
        its stages), so that a crash loop ends at the limit."""
        started = replace(job, attempts=job.attempts + 1)
        if death is not None:
            started = replace(
                started,
                crashes=job.crashes + death.charged,
                interrupted=job.interrupted + (not death.charged),
                deaths=(*job.deaths, f"{death.cause}: {death.detail}"),
            )
        self._write_meta(started)
        return started

    def set_aside(self, job: ClaimedJob) -> ClaimedJob:
        """A job that stepped aside between its segments for one of a higher priority:
        the attempt it began is not counted (it did not fail; it yielded)."""
        back = replace(job, attempts=max(0, job.attempts - 1))
        self._write_meta(back)
        return back

    def _job_dirs(self) -> list[Path]:
        return [d for d in self.work.iterdir() if d.is_dir() and not d.name.startswith(".")]

    @staticmethod
    def _reported(job_dir: Path) -> bool:
        return (job_dir / names.OUT / names.REPORT).exists() or (job_dir / names.REPORT).exists()

    def pending(self) -> list[ClaimedJob]:
        """Jobs in work/ to (re)run: claimed, no report written yet; oldest manifest first
        (a rename keeps the producer's mtime, so this is the order they were dropped in).
        A job whose report is written only waits for its commit (recover), never reruns."""
        dirs = [
            d
            for d in self._job_dirs()
            if self.leases.owns(d.name) and (d / names.MANIFEST).exists()
        ]
        jobs = [self._read_job(d) for d in dirs if not self._reported(d)]
        return sorted(jobs, key=lambda j: (j.manifest_path.stat().st_mtime_ns, j.job_id))

    def uncommitted(self) -> list[str]:
        """Jobs whose report is written but not yet published (a commit that failed)."""
        return sorted(
            d.name for d in self._job_dirs() if self.leases.owns(d.name) and self._reported(d)
        )

    def recover(self) -> list[ClaimedJob]:
        """After a crash (ours or another daemon's): finish half-done commits, clear empty
        claims, return the jobs to rerun. Only jobs whose lease we hold or can take: a job
        another live daemon owns is left alone."""
        if not self._swept:  # the first recovery, at start: not every scan, which would
            # list the client ids' folder (one file per id ever used) every 30 s for nothing
            self._swept = True  # the spool-wide files' temps of a writer killed mid-write
            remove_orphan_temps([*self.root.glob(".*.tmp"), *self.ids.folder.glob(".*.tmp")])
        for job_dir in sorted(self._job_dirs()):
            if not self.leases.take(job_dir):
                continue
            try:
                self._recover_one(job_dir)
            except OSError as exc:  # e.g. outbox unwritable: this one waits, the others go on
                log.warning("spool.commit_pending", job_id=job_dir.name, error=str(exc))
        return self.pending()

    def _recover_one(self, job_dir: Path) -> None:
        for folder in (job_dir, job_dir / names.OUT):  # half-written files of a killed daemon
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        job = self._read_job(job_dir)
        if (self.outbox / job.job_id).exists() or (self.failed / job.job_id).exists():
            shutil.rmtree(job_dir)
            self.leases.release(job.job_id)
            log.info("spool.recovered", job_id=job.job_id, action="already committed")
        elif (job.out_dir / names.REPORT).exists():
            self._move_out(job)
            log.info("spool.recovered", job_id=job.job_id, action="finished commit to outbox")
        elif (job_dir / names.REPORT).exists():
            self._move_failed(job)
            log.info("spool.recovered", job_id=job.job_id, action="finished commit to failed")
        elif not (job_dir / names.MANIFEST).exists():  # an empty claim
            shutil.rmtree(job_dir)
            self.leases.release(job.job_id)

    def take_input(self, job: ClaimedJob, relative: str, max_bytes: int, field: str) -> Path:
        """A file the manifest names, as the job's own: a private input (private.py) is
        moved into the job once and found there on every later attempt; a file beside the
        manifest is copied (it stays the producer's)."""
        if private.is_private(relative):
            return private.take(self.inbox, job.dir, relative, max_bytes, field)
        return self.copy_input(job, relative, max_bytes, field)

    def copy_input(
        self, job: ClaimedJob, relative: str, max_bytes: int, field: str = "tts.voice"
    ) -> Path:
        """Copy a file the manifest references from the inbox; refuse any escape.

        The checks are made again on what is actually opened: each path component is
        opened relative to the one before with O_NOFOLLOW, so a symlink swapped in
        after checked_reference looked cannot lead the copy out of the inbox."""
        source = checked_reference(self.inbox, relative, max_bytes, field)
        target = job.dir / names.INPUTS / source.name
        fd = open_beneath(self.inbox, source.relative_to(self.inbox).parts, field)
        with os.fdopen(fd, "rb") as src:
            check_opened(relative, os.fstat(src.fileno()), max_bytes, field)
            target.parent.mkdir(exist_ok=True)
            with target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        return target

    # ---- commit --------------------------------------------------------------------

    def commit_done(self, job: ClaimedJob, report_json: str) -> Path:
        job.out_dir.mkdir(exist_ok=True)
        write_atomic(job.out_dir / names.REPORT, report_json, overwrite=True)
        return self._move_out(job)

    def commit_failed(self, job: ClaimedJob, report_json: str) -> Path:
        shutil.rmtree(job.out_dir, ignore_errors=True)
        write_atomic(job.dir / names.REPORT, report_json, overwrite=True)
        return self._move_failed(job)

    def _move_out(self, job: ClaimedJob) -> Path:
        final = self.outbox / job.job_id
        os.rename(job.out_dir, final)
        fsync_dir(self.outbox)
        shutil.rmtree(job.dir)
        self.leases.release(job.job_id)
        self._record(final, "outbox")
        if unheard(final):  # its HTTP client went away: its audio is not kept (sent.py)
            forget_audio(final)
        return final

    def _move_failed(self, job: ClaimedJob) -> Path:
        final = self.failed / job.job_id
        (job.dir / names.RECORD).unlink(missing_ok=True)
        shutil.rmtree(stream_folder(job.dir), ignore_errors=True)  # its readers keep theirs
        os.rename(job.dir, final)  # the lease goes along, still held: no peer can take it
        fsync_dir(self.failed)
        (final / LEASE).unlink(missing_ok=True)
        self.leases.release(job.job_id)
        self._record(final, "failed")
        return final

    def _record(self, final: Path, folder: Literal["outbox", "failed"]) -> None:
        """The ledger's line for a job that ended. The job is committed already: a line
        that cannot be written is said once per episode, never a failure."""
        try:
            with (final / names.REPORT).open("rb") as fh:
                st = os.fstat(fh.fileno())
                report = json.loads(fh.read())
            manifest = report.get("manifest") or {}
            entry = Finished(
                job_id=final.name,
                status=str(report.get("status", "failed")),
                folder=folder,
                finished=time.time(),
                origin="http" if manifest.get("origin") == "http" else "drop",
                mark=mark_of(st),
            )
        except (OSError, ValueError, AttributeError):
            return
        self._ledger_writes.attempt(self.ledger.path, lambda: self.ledger.add(entry))

    def withdraw(self, name: str, report: Callable[[str], str]) -> Path | None:
        """Fail an inbox manifest before any daemon claims it (a cancel): it is taken by
        one rename, so either a daemon claimed it first (None) or none ever will. It ends
        in failed/ under the id a claim would give it, beside `report(job_id)`."""
        staging = self.incoming / f".withdrawn-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            os.rename(self.inbox / name, staging / names.MANIFEST)
        except FileNotFoundError:
            staging.rmdir()
            return None
        return self._fail_unrun(staging, self._new_job_id(name), report)

    def _fail_unrun(self, staging: Path, job_id: str, report: Callable[[str], str]) -> Path:
        """A job that never ran, gathered in `staging`, into failed/ beside its report."""
        write_atomic(staging / names.REPORT, report(job_id))
        final = self.failed / job_id
        os.rename(staging, final)
        fsync_dir(self.failed)
        self._record(final, "failed")
        return final

    def fail_orphan(self, name: str, report: Callable[[str], str]) -> Path | None:
        """A private input nothing names (private.orphans) becomes a failed job holding it
        in its inputs/, beside `report(job_id)`, so it is found, not lost; None when it went
        meanwhile (its manifest's daemon took it)."""
        staging = self.incoming / f".orphan-{uuid.uuid4().hex}"
        (staging / names.INPUTS).mkdir(parents=True)
        refs = private.open_folder(self.inbox)
        try:
            os.rename(name, staging / names.INPUTS / name, src_dir_fd=refs)
        except FileNotFoundError:
            shutil.rmtree(staging)
            return None
        finally:
            os.close(refs)
        return self._fail_unrun(staging, self._new_job_id(name.split("-", 1)[-1]), report)

    # ---- counts ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Jobs per folder. A folder of job folders is counted by its link count where the
        filesystem keeps one (ext4, xfs, tmpfs: 2 + its subfolders): no listing of an
        outbox of thousands on every dashboard poll or metrics scrape."""

        def count(d: Path) -> int:
            try:
                links = os.stat(d).st_nlink
                if links >= 2:
                    return links - 2
                return sum(1 for e in os.scandir(d) if not e.name.startswith("."))
            except FileNotFoundError:
                return 0

        return {
            "inbox": len(self.scan_inbox()),
            "work": count(self.work),
            "outbox": count(self.outbox),
            "failed": count(self.failed),
        }
