import json
import os
import subprocess
import sys

import pytest

from tests.conftest import drop, make_settings, unit_service
from voicedrop.errors import ManifestError
from voicedrop.fsutil import temp_path
from voicedrop.report import JobReport, VramSnapshot
from voicedrop.spool.inbox import InboxFile, is_candidate
from voicedrop.spool.jobs import Spool
from voicedrop.spool.state import job_state


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool")
    s.ensure()
    return s


def put(spool, name, text="{}"):
    path = spool.inbox / name
    path.write_text(text)
    return path


def claim(spool, name):
    [item] = [f for f in spool.scan_inbox() if f.path.name == name]
    return spool.claim(item)


@pytest.mark.parametrize("name", ["job.json", "Job 1.JSON", "a.b.json"])
def test_candidates(name):
    assert is_candidate(name)


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.json",
        "job.json.partial",
        "job.json.tmp",
        "job.txt",
        "._job.json",
        "~job.json",
        "job.json~",
        "Thumbs.db",
        "a.wav",
    ],
)
def test_ignored_names(name):
    assert not is_candidate(name)


def test_scan_lists_only_candidates_oldest_first(spool):
    put(spool, "b.json")
    os.utime(spool.inbox / "b.json", (1000, 1000))
    put(spool, "a.json")
    put(spool, "a.json.partial")
    (spool.incoming / "c.json").write_text("{}")
    assert [f.path.name for f in spool.scan_inbox()] == ["b.json", "a.json"]


def test_claim_moves_the_manifest_into_its_own_work_folder(spool):
    put(spool, "hello world.json", '{"x": 1}')
    job = claim(spool, "hello world.json")
    assert job.job_id == "hello_world"
    assert job.manifest_path.read_text() == '{"x": 1}'
    assert not (spool.inbox / "hello world.json").exists()
    assert job.source == "hello world.json"
    spool.begin_attempt(job)
    assert json.loads((job.dir / "job.json").read_text())["source"] == "hello world.json"


def test_same_name_twice_gets_distinct_job_ids(spool):
    put(spool, "job.json")
    first = claim(spool, "job.json")
    spool.commit_done(first, "{}")
    put(spool, "job.json")
    assert claim(spool, "job.json").job_id == "job-2"


def test_a_leased_job_is_recovered_only_once_its_owner_lets_go(spool):
    """Two daemons of one spool, as two Spool objects: flock leases are per open file."""
    peer = Spool(spool.root)
    put(spool, "mine.json")
    job = claim(spool, "mine.json")
    spool.begin_attempt(job)
    assert peer.recover() == [] and job.manifest_path.exists()  # the owner lives
    spool.leases.release(job.job_id)  # what the kernel does when the owner dies
    [adopted] = peer.recover()
    assert adopted.job_id == "mine" and adopted.attempts == 1
    peer.commit_done(adopted, "{}")
    assert (spool.outbox / "mine").exists() and not (spool.work / "mine").exists()
    assert not (spool.outbox / "mine" / ".lease").exists()


def test_an_inbox_file_being_claimed_elsewhere_is_left_to_that_claimer(spool):
    from voicedrop.spool.leases import hold_inbox_file

    put(spool, "race.json")
    held = hold_inbox_file(spool.inbox / "race.json")
    assert isinstance(held, int) and not isinstance(held, bool)
    try:
        assert claim(spool, "race.json") is None  # no "race-2" for the same file
    finally:
        os.close(held)
    assert claim(spool, "race.json").job_id == "race"


def test_claim_of_a_vanished_file_returns_none_and_leaves_no_folder(spool):
    ghost = InboxFile(spool.inbox / "gone.json", 2, 0)
    assert spool.claim(ghost) is None
    assert list(spool.work.iterdir()) == []


def test_commit_done_publishes_the_whole_folder_with_report_last(spool):
    put(spool, "j.json")
    job = claim(spool, "j.json")
    job.out_dir.mkdir()
    (job.out_dir / "speech.wav").write_bytes(b"RIFF")
    final = spool.commit_done(job, '{"status": "done"}')
    assert sorted(p.name for p in final.iterdir()) == ["report.json", "speech.wav"]
    assert list(spool.work.iterdir()) == []


def test_commit_failed_keeps_manifest_and_inputs(spool):
    put(spool, "j.json", "not json")
    job = claim(spool, "j.json")
    (job.dir / "inputs").mkdir()
    (job.dir / "inputs" / "ref.wav").write_bytes(b"x")
    job.out_dir.mkdir()
    final = spool.commit_failed(job, '{"status": "failed"}')
    assert (final / "manifest.json").read_text() == "not json"
    assert (final / "inputs" / "ref.wav").exists()
    assert (final / "report.json").exists() and not (final / "out").exists()


def test_begin_attempt_is_durable(spool):
    put(spool, "j.json")
    job = spool.begin_attempt(spool.begin_attempt(claim(spool, "j.json")))
    assert job.attempts == 2
    assert spool.recover()[0].attempts == 2


def test_recover_finishes_half_done_commits(spool):
    for name in ("done", "failed", "twice", "pending"):
        put(spool, f"{name}.json")
        claim(spool, f"{name}.json")
    # crashed after writing out/report.json, before the rename to outbox
    (spool.work / "done" / "out").mkdir()
    (spool.work / "done" / "out" / "report.json").write_text("{}")
    # crashed after writing the failure report, before the rename to failed
    (spool.work / "failed" / "report.json").write_text("{}")
    # crashed after the rename to outbox, before removing work/
    (spool.outbox / "twice").mkdir()
    (spool.work / "empty").mkdir()  # crashed between mkdir and rename
    pending = spool.recover()
    assert [j.job_id for j in pending] == ["pending"]
    assert (spool.outbox / "done" / "report.json").exists()
    assert (spool.failed / "failed" / "report.json").exists()
    assert sorted(p.name for p in spool.work.iterdir()) == ["pending"]


def test_copy_input_copies_a_regular_file(spool):
    (spool.inbox / "refs").mkdir(exist_ok=True)
    (spool.inbox / "refs" / "alice.wav").write_bytes(b"data")
    put(spool, "j.json")
    job = claim(spool, "j.json")
    copied = spool.copy_input(job, "refs/alice.wav", 100)
    assert copied == job.dir / "inputs" / "alice.wav" and copied.read_bytes() == b"data"
    assert (spool.inbox / "refs" / "alice.wav").exists()


@pytest.mark.parametrize(
    "setup, ref, fragment",
    [
        (lambda s, t: None, "missing.wav", "not found"),
        (lambda s, t: (s.inbox / "d.wav").mkdir(), "d.wav", "not a regular file"),
        (lambda s, t: (s.inbox / "l.wav").symlink_to(t), "l.wav", "symlink"),
        (
            lambda s, t: (s.inbox / "ld").symlink_to(t.parent, target_is_directory=True),
            "ld/secret.wav",
            "symlink",
        ),
        (lambda s, t: (s.inbox / "big.wav").write_bytes(b"x" * 101), "big.wav", "limit is 100"),
        (lambda s, t: None, "../spool/x.wav", "inside the inbox"),
        (lambda s, t: None, "/etc/passwd", "inside the inbox"),
        (lambda s, t: None, "~/secret.wav", "not found"),  # '~' is just a name here
        (lambda s, t: os.link(t, s.inbox / "linked.wav"), "linked.wav", "other hard links"),
        (lambda s, t: os.mkfifo(s.inbox / "pipe.wav"), "pipe.wav", "not a regular file"),
    ],
)
def test_copy_input_refuses_escapes(spool, tmp_path, setup, ref, fragment):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"secret")
    setup(spool, secret)
    put(spool, "j.json")
    job = claim(spool, "j.json")
    with pytest.raises(ManifestError, match=fragment) as err:
        spool.copy_input(job, ref, 100)
    assert err.value.field == "tts.voice"
    assert not (job.dir / "inputs").exists()


def test_a_client_id_is_held_by_the_job_that_reserved_it_until_it_fails_for_good(spool):
    put(spool, "a.json")
    put(spool, "b.json")
    a, b = claim(spool, "a.json"), claim(spool, "b.json")
    assert spool.ids.reserve("client-1", a.job_id) is None  # ours now
    assert spool.ids.reserve("client-1", a.job_id) is None  # still ours (a retried attempt)
    assert spool.ids.reserve("client-1", b.job_id) == a.job_id  # running: b is its duplicate
    spool.commit_failed(a, "{}")
    spool.ids.release("client-1", a.job_id)
    assert spool.ids.reserve("client-1", b.job_id) is None  # failed for good: free again
    spool.commit_done(b, "{}")
    put(spool, "c.json")
    assert spool.ids.reserve("client-1", claim(spool, "c.json").job_id) == b.job_id  # done


def test_two_daemons_reserving_one_client_id_together_get_one_holder(tmp_path):
    """Every daemon of a spool has its own Spool object; the reservation is the files'."""
    import threading

    spools = [Spool(tmp_path / "spool") for _ in range(8)]
    spools[0].ensure()
    jobs = []
    for i, sp in enumerate(spools):
        put(sp, f"j{i}.json")
        jobs.append(claim(sp, f"j{i}.json"))
    results: dict[str, str | None] = {}
    start = threading.Barrier(len(spools))

    def reserve(sp: Spool, job_id: str) -> None:
        start.wait()
        results[job_id] = sp.ids.reserve("order-7", job_id)

    threads = [
        threading.Thread(target=reserve, args=(sp, j.job_id))
        for sp, j in zip(spools, jobs, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [j for j, holder in results.items() if holder is None]
    assert len(winners) == 1
    assert all(holder == winners[0] for j, holder in results.items() if j != winners[0])


def test_a_stale_reservation_of_a_vanished_job_holds_nothing(spool):
    put(spool, "a.json")
    a = claim(spool, "a.json")
    assert spool.ids.reserve("client-1", a.job_id) is None
    spool.commit_failed(a, "{}")  # and the daemon died before releasing the id
    put(spool, "b.json")
    assert spool.ids.reserve("client-1", claim(spool, "b.json").job_id) is None


def test_counts(spool):
    put(spool, "a.json")
    put(spool, "b.json")
    put(spool, ".c.json")
    claim(spool, "a.json")
    assert spool.counts() == {"inbox": 1, "work": 1, "outbox": 0, "failed": 0}


def test_a_symlink_swapped_in_after_the_check_is_not_followed(spool, tmp_path, monkeypatch):
    import voicedrop.spool.jobs as spool_module

    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"secret")
    (spool.inbox / "refs").mkdir(exist_ok=True)
    (spool.inbox / "refs" / "alice.wav").write_bytes(b"voice")
    checked = spool_module.checked_reference

    def check_then_swap(root, relative, max_bytes, field="tts.voice"):
        path = checked(root, relative, max_bytes, field)  # passes: a regular file
        (root / "refs").rename(root / "refs-old")  # ... then the folder becomes a link out
        (root / "refs").symlink_to(tmp_path, target_is_directory=True)
        (tmp_path / "alice.wav").write_bytes(b"secret")
        return path

    monkeypatch.setattr(spool_module, "checked_reference", check_then_swap)
    put(spool, "j.json")
    job = claim(spool, "j.json")
    with pytest.raises(ManifestError, match="changed while it was being taken"):
        spool.copy_input(job, "refs/alice.wav", 100)
    assert not (job.dir / "inputs").exists()


class MovesWhileLookedFor:
    """The spool, with a job moved (by the real claim or commit) the moment the lookup
    first reaches for folder `when`: the interleaving a busy machine gives."""

    def __init__(self, spool, when, move):
        self._spool, self._when, self._move = spool, when, move

    def __getattr__(self, name):
        if name == self._when and self._move is not None:
            move, self._move = self._move, None
            move()
        return getattr(self._spool, name)


def test_a_job_claimed_while_it_is_looked_for_is_running_not_unknown(spool):
    put(spool, "race.json")
    moving = MovesWhileLookedFor(spool, "inbox", lambda: claim(spool, "race.json"))
    state = job_state(moving, "race", None)
    assert state is not None and state.status == "running"


def test_a_job_committed_while_it_is_looked_for_is_done_not_unknown(spool):
    put(spool, "race.json")
    job = claim(spool, "race.json")
    vram = {"available": False, "low_vram_mode": False, "allocated_gb": 0.0, "reserved_gb": 0.0,
            "free_gb": 0.0, "total_gb": 0.0, "cached_models": 0}  # fmt: skip
    snapshot = VramSnapshot.model_validate({"before": vram, "after": vram})
    report = JobReport(job_id="race", status="done", source="race.json", attempt=1, vram=snapshot)
    commit = lambda: spool.commit_done(job, report.to_json())  # noqa: E731
    state = job_state(MovesWhileLookedFor(spool, "work", commit), "race", None)
    assert state is not None and state.status == "done" and state.report is not None


def test_a_job_that_never_was_is_unknown(spool):
    assert job_state(spool, "nothing", None) is None


def test_recovery_removes_the_temp_files_of_a_writer_killed_mid_write(spool):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    spool.ids.folder.mkdir(exist_ok=True)
    orphans = [
        temp_path(spool.root / "ledger.jsonl", pid=gone.pid),
        temp_path(spool.ids.folder / f"{'c' * 64}.json", pid=gone.pid),
    ]
    live = temp_path(spool.ids.folder / f"{'d' * 64}.json")
    elsewhere = temp_path(spool.root / "ledger.jsonl", pid=gone.pid, host="0123abcd")
    for temp in [*orphans, live, elsewhere]:
        temp.write_text("{")
    spool.recover()
    assert [t.exists() for t in orphans] == [False, False] and live.exists()
    assert elsewhere.exists(), "a temp file of a daemon on another host sharing the spool"


def test_a_finished_jobs_report_is_read_back_typed_silence_included(tmp_path):
    """A silent output's peak is -inf dBFS, written as null: the typed reader takes it."""
    service = unit_service(make_settings(tmp_path))
    drop(service.spool.inbox, "quiet.json", {"text": "x", "tts": {"engine": "noop"}})
    assert service.executor.step().status == "done"
    state = job_state(service.spool, "quiet", None)
    assert state is not None and state.report is not None and state.error is None
    assert state.report.outputs[0].peak_dbfs is None and state.outputs == ["speech.wav"]


def test_a_claimed_job_reads_as_starting_until_an_attempt_has_failed(spool):
    """`submit --wait` said "attempt 1 failed transiently" for a job just claimed, before
    the daemon's status named it: only an attempt that ended in an error is a retry."""
    from voicedrop.client import progress_line
    from voicedrop.report import ErrorInfo

    put(spool, "j.json")
    job = spool.begin_attempt(claim(spool, "j.json"))
    assert progress_line(spool, job_state(spool, "j", None), None) == "running: starting"
    spool.keep_errors(job, [ErrorInfo(code="out_of_memory", message="x", kind="transient")])
    line = progress_line(spool, job_state(spool, "j", None), None)
    assert line.startswith("attempt 1 failed transiently: waiting for a retry")
