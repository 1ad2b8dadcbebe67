"""How the HTTP side follows a job: woken by the spool's own changes (inotify, on a real
folder), looking at the spool on a worker thread, never polling on the event loop."""

from __future__ import annotations

import asyncio
import threading

from voicedrop.api import follow
from voicedrop.api.desk import Desk
from voicedrop.api.notes import SAFETY_S, Notes
from voicedrop.pipeline.engines import build_engines
from voicedrop.pipeline.plan import Planner
from voicedrop.spool.jobs import Spool
from voicedrop.spool.state import JobState


def test_a_follower_hears_its_own_job_grow_and_no_other(settings):
    spool = Spool.from_settings(settings)
    notes = Notes(spool)

    async def scene() -> tuple[bool, bool]:
        with notes.following("a") as a, notes.following("b") as b:
            assert notes.period_s == SAFETY_S  # inotify: a look this seldom unless told
            stream = spool.work / "a" / "stream"
            stream.mkdir(parents=True)
            (stream / "audio.pcm").write_bytes(b"\0\0" * 100)  # the daemon appends audio
            await asyncio.wait_for(a._event.wait(), 30)  # heard: no look was due before 0.5 s
            await asyncio.sleep(0)  # anything sent to b by the same change is in by now
            return a._event.is_set(), b._event.is_set()

    try:
        heard_a, heard_b = asyncio.run(scene())
    finally:
        notes.close()
    assert heard_a and not heard_b


def test_a_job_is_looked_at_on_a_worker_thread_not_the_event_loop(settings):
    planner = Planner(settings, build_engines(settings))
    desk = Desk(lambda: (settings, planner))
    where: list[threading.Thread] = []

    def state(job_id: str) -> JobState:
        where.append(threading.current_thread())
        return JobState(job_id, "failed")

    desk.state = state  # type: ignore[method-assign]

    async def scene() -> tuple[object, threading.Thread]:
        async def gone() -> bool:
            return False

        found = await follow.audio_of(desk, "j", gone=gone)
        return found, threading.current_thread()

    try:
        found, loop_thread = asyncio.run(scene())
    finally:
        desk.close()
    assert isinstance(found, JobState) and found.status == "failed"
    assert where and all(t is not loop_thread for t in where)
