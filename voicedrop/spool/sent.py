"""The audio of an HTTP speech response, once its client has it: not kept.

`/v1/audio/speech` answers with its job's audio as it is made; the job's folder in the
outbox then holds a second copy that nobody asked to keep (about 10 MB a minute of
speech). The rule, owned here:

- a response sent whole: the job's audio files are removed at once, its report stays;
- a client that went away mid-response: the job is marked (`UNHEARD` in its staged
  results, which move with them into the outbox), and the daemon removes the audio of a
  marked job as it commits it (its retention sweep too, should a kill come between);
- a request with an `Idempotency-Key` keeps its audio until retention removes the job:
  the same request sent again is answered from it;
- `[http] keep_sent_audio = true` keeps everything.

A file asked for after its audio went is answered `410 Gone` (api/app.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from pydantic import ValidationError

from voicedrop.report import JobReport
from voicedrop.spool import names

log = structlog.get_logger(__name__)
UNHEARD = ".unheard"  # in a job's results: its client went away, its audio is not kept


def forget_audio(folder: Path) -> int:
    """Remove the audio files a finished job's report names (the report stays); how many
    went. Names that are not plain file names in the folder are left alone."""
    try:
        report = JobReport.model_validate_json((folder / names.REPORT).read_bytes())
    except (OSError, ValueError, ValidationError):
        return 0
    gone = 0
    for output in report.outputs:
        if os.path.basename(output.file) != output.file or output.file == names.REPORT:
            continue
        try:
            (folder / output.file).unlink()
            gone += 1
        except FileNotFoundError:
            continue
    (folder / UNHEARD).unlink(missing_ok=True)
    if gone:
        log.info("http.audio_not_kept", job_id=folder.name, files=gone)
    return gone


def mark_unheard(work: Path, outbox: Path, job_id: str) -> None:
    """The client of `job_id` went away before it had the audio: its audio goes once the
    job is done (at once if it is already)."""
    results = work / job_id / names.OUT
    try:
        results.mkdir(exist_ok=True)  # where its results are staged (made at commit else)
        (results / UNHEARD).touch()
    except FileNotFoundError:  # not running any more
        pass
    if (outbox / job_id / names.REPORT).exists():  # done, perhaps just before the mark
        forget_audio(outbox / job_id)


def unheard(folder: Path) -> bool:
    return (folder / UNHEARD).exists()
