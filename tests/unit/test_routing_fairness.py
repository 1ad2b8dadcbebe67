"""Routing over random queues and worker states, as the cluster dispatch drives the
scheduler (daemon/cluster.py): free workers holding models choose first, each for what it
holds, with what the others hold left to them. Two promises, checked on what happens —
the times a job was passed over and picked — not on the scheduler's insides:

- no job is overtaken by a newer one once it has waited `max_wait_s` since it was first
  passed over (while a worker is free, it is next);
- a free worker holding every model of a waiting job takes such a job (when no job has
  waited enough).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicedrop.daemon.scheduler import Scheduler

MODELS = ("a", "b", "c", "d")
MAX_WAIT = 10.0

keys = st.frozensets(st.sampled_from(MODELS), min_size=1, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    jobs=st.lists(keys, min_size=1, max_size=25),
    workers=st.lists(st.frozensets(st.sampled_from(MODELS), max_size=3), min_size=1, max_size=4),
    steps=st.lists(
        st.tuples(st.floats(0.1, 6.0), st.lists(st.booleans(), min_size=4, max_size=4)),
        min_size=1,
        max_size=60,
    ),
)
def test_nothing_waits_past_max_wait_and_holders_get_their_jobs(jobs, workers, steps):
    now = [0.0]
    scheduler = Scheduler(max_skips=10_000, max_wait_s=MAX_WAIT, clock=lambda: now[0])
    queue = [f"j{i:02d}" for i in range(len(jobs))]
    needs = dict(zip(queue, jobs, strict=True))
    held = list(workers)
    passed_since: dict[str, float] = {}  # when a newer job was first picked before it
    for dt, free_mask in steps:
        now[0] += dt
        free = [i for i in range(len(held)) if free_mask[i % len(free_mask)]]
        for w in sorted(free, key=lambda i: -len(held[i])):  # holders choose first
            if not queue:
                return
            elsewhere = frozenset().union(*(held[o] for o in range(len(held)) if o != w))
            waited = [j for j in queue if now[0] - passed_since.get(j, now[0]) >= MAX_WAIT]
            mine = [j for j in queue if needs[j] <= held[w]]
            chosen = scheduler.pick(queue, str, needs.__getitem__, set(held[w]), elsewhere)
            assert chosen is not None
            if waited:  # promise 1: the oldest job that has waited enough is not overtaken
                assert queue.index(chosen) <= queue.index(waited[0]), (chosen, waited[0])
            elif mine:  # promise 2: a worker holding all of a job's models takes one
                assert needs[chosen] <= held[w], (chosen, held[w], mine)
            for older in queue[: queue.index(chosen)]:
                passed_since.setdefault(older, now[0])
            queue.remove(chosen)
            held[w] = held[w] | needs[chosen]  # it now holds the models it used
