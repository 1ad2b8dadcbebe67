"""The names of the spool's files and folders, in one place: every module that reads or
writes a job's folder takes them from here, so none can drift from the others.

    work/<job>/manifest.json     the claimed manifest (outbox/ and failed/ keep it too)
    work/<job>/job.json          the attempts so far (spool/claimed.JobRecord)
    work/<job>/inputs/           the files it names, copied or moved in (spool/private.py)
    work/<job>/out/              its results, staged; renamed into outbox/<job>/ when done
    <folder>/<job>/report.json   written last: a job is done only when its report is
"""

from __future__ import annotations

MANIFEST = "manifest.json"
RECORD = "job.json"
INPUTS = "inputs"
OUT = "out"
REPORT = "report.json"
