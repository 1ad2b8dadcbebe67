"""The spool: the on-disk contract every part of voicedrop meets on.

The daemon, the client (`validate`, `submit`, `status`), the HTTP side and the CLI all
work through these folders and files, and only through this package: the inbox and its
listing (inbox.py), a job's folder and its lifecycle (jobs.py), what a claimed job is
(claimed.py), client ids (ids.py), leases between daemons (leases.py), files a manifest
names (references.py), the evidence of a death mid-job (deaths.py), the daemon's status
file (status.py) and what state a job is in (state.py). Nothing here knows an engine or
loads a model.
"""
