"""Retention: HTTP jobs go after their time, drop-folder jobs stay, counts are bounded, a
job someone reads is left for the next sweep — all found through the ledger."""

from __future__ import annotations

import os
import shutil
import time

from tests.conftest import drop, hello, make_settings, unit_service
from voicedrop.spool.ledger import hold


def test_http_jobs_go_after_a_day_drop_folder_jobs_stay_and_counts_are_bounded(tmp_path):
    settings = make_settings(tmp_path, retention={"drop": {"max_jobs": 2}})
    service = unit_service(settings)
    inbox = service.spool.inbox
    for name in ("web1", "web2"):
        drop(inbox, f"{name}.json", hello(origin="http"))
    for name in ("d1", "d2", "d3"):
        drop(inbox, f"{name}.json", hello())
    drop(inbox, "bad.json", hello(origin="http", tts={"engine": "nope"}))
    for _ in range(6):
        service.executor.step()
    retention = service.retention
    entries = service.spool.ledger.entries()
    assert [e.job_id for e in entries] == ["web1", "web2", "d1", "d2", "d3", "bad"]
    assert [e.job_id for e in retention.doomed(entries, time.time())] == ["d1"]  # 3 > 2
    day_later = time.time() + 86400
    assert {e.job_id for e in retention.doomed(entries, day_later)} == {"web1", "web2", "bad", "d1"}

    reading = hold(service.spool.outbox / "d1")  # someone is sending its audio
    assert retention.sweep() == 0
    os.close(reading)
    assert retention.sweep() == 1
    assert not (service.spool.outbox / "d1").exists()
    assert [e.job_id for e in service.spool.ledger.entries()] == ["web1", "web2", "d2", "d3", "bad"]
    assert service.spool.counts()["outbox"] == 4


def test_the_ledger_of_a_spool_made_before_it_lists_the_jobs_there(tmp_path):
    settings = make_settings(tmp_path)
    service = unit_service(settings)
    drop(service.spool.inbox, "old.json", hello())
    service.executor.step()
    service.spool.ledger.path.unlink()
    service.spool.ledger.ensure(service.spool.outbox, service.spool.failed)
    assert [e.job_id for e in service.spool.ledger.recent(10)] == ["old"]


def test_an_old_entry_never_removes_a_new_job_of_the_same_name(tmp_path):
    """A user removed outbox/ep and dropped ep.json again: retention expired the old job's
    entry and removed the new outbox/ep, seconds after it finished."""
    settings = make_settings(tmp_path, retention={"drop": {"max_age_s": 30}})
    service = unit_service(settings)
    spool = service.spool
    drop(spool.inbox, "ep.json", hello())
    assert service.executor.step().status == "done"
    [old] = spool.ledger.entries()
    aged = old.model_copy(update={"finished": old.finished - 60})  # finished a minute ago
    spool.ledger.path.write_text(aged.model_dump_json() + "\n")
    shutil.rmtree(spool.outbox / "ep")  # the user takes the result away …
    drop(spool.inbox, "ep.json", hello(text="A new take."))  # … and drops the job again
    assert service.executor.step().job_id == "ep"
    assert service.retention.sweep() == 0  # the old job is gone already; the new one stays
    assert (spool.outbox / "ep" / "report.json").exists()
    [new] = spool.ledger.entries()
    assert new.mark != aged.mark and new.finished > aged.finished
