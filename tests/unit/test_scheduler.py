from voicedrop.daemon.scheduler import Scheduler

JOBS = {"a": {"xtts"}, "b": {"f5tts"}, "c": {"xtts"}, "d": {"f5tts"}}


def pick(s, queue, resident):
    return s.pick(queue, lambda n: n, lambda n: JOBS[n], resident)


def test_fifo_without_resident_models():
    assert pick(Scheduler(), ["a", "b", "c"], set()) == "a"


def test_fifo_when_affinity_is_off():
    assert pick(Scheduler(affinity=False), ["a", "b"], {"f5tts"}) == "a"


def test_affinity_prefers_a_job_whose_model_is_loaded():
    assert pick(Scheduler(), ["a", "b", "c"], {"f5tts"}) == "b"


def test_empty_queue():
    assert pick(Scheduler(), [], {"xtts"}) is None


def test_skips_are_bounded_so_nothing_starves():
    keys = {"a": {"xtts"}} | {f"b{i}": {"f5tts"} for i in range(5)}
    s = Scheduler(max_skips=2)
    queue = ["a", "b0", "b1", "b2", "b3", "b4"]
    order = []
    while queue:
        chosen = s.pick(queue, lambda n: n, lambda n: keys[n], {"f5tts"})
        order.append(chosen)
        queue.remove(chosen)
    assert order == ["b0", "b1", "a", "b2", "b3", "b4"]


def test_a_job_passed_over_waits_at_most_max_wait_s():
    now = [0.0]
    s = Scheduler(max_skips=100, max_wait_s=30.0, clock=lambda: now[0])
    assert pick(s, ["a", "b"], {"f5tts"}) == "b" and s.passed_by == 0  # b jumps over a
    now[0] = 29.0
    assert pick(s, ["a", "d"], {"f5tts"}) == "d"  # a has waited 29 s since first passed
    now[0] = 30.0
    assert pick(s, ["a", "b"], {"f5tts"}) == "a"  # 30 s: a runs, models or not
    assert s.passed_by == 2  # b and d went ahead of it


def test_preview_names_the_next_pick_and_charges_no_skip():
    """What prefetch asks: which job comes next, without changing who comes next."""
    s = Scheduler(max_skips=1)
    queue = ["a", "b", "c"]
    for _ in range(3):
        assert s.preview(queue, lambda n: n, lambda n: JOBS[n], {"f5tts"}) == "b"
    assert pick(s, queue, {"f5tts"}) == "b" and s.passed_by == 0
    queue = ["a", "c", "d"]  # "a" was passed once: with max_skips=1 it goes next
    assert s.preview(queue, lambda n: n, lambda n: JOBS[n], {"f5tts"}) == "a"
    assert pick(s, queue, {"f5tts"}) == "a" and s.passed_by == 1


def test_a_job_that_needs_nothing_loaded_goes_before_one_that_shares_a_model():
    """A cluster worker holding the TTS model and voice A: a job for voice A needs no load;
    a job for voice B shares only the TTS model and would load B."""
    keys = {"b": {"noop", "tape:b"}, "a": {"noop", "tape:a"}}
    s = Scheduler()
    assert s.pick(["b", "a"], lambda n: n, lambda n: keys[n], {"noop", "tape:a"}) == "a"
    assert s.pick(["b"], lambda n: n, lambda n: keys[n], {"noop", "tape:a"}) == "b"


def test_a_cluster_worker_leaves_other_workers_jobs_to_them_without_starving_them():
    """Worker 1 holds voice a; worker 2 (free, holding nothing) should take voice b, not
    the voice-a job at the head of the queue. Passing a job another worker holds costs
    it time, not a skip: it still runs once max_wait_s has passed."""
    keys = {"a1": {"noop", "tape:a"}, "b1": {"noop", "tape:b"}, "a2": {"noop", "tape:a"}}
    clock = [0.0]
    s = Scheduler(max_skips=1, max_wait_s=5, clock=lambda: clock[0])
    queue = ["a1", "b1", "a2"]
    mine, theirs = set(), {"noop", "tape:a"}
    for _ in range(3):  # no skips charged: max_skips=1 would have forced "a1" after one
        assert s.pick(queue, lambda n: n, lambda n: keys[n], mine, theirs) == "b1"
    clock[0] = 6.0  # "a1" has waited max_wait_s since it was first passed
    assert s.pick(queue, lambda n: n, lambda n: keys[n], mine, theirs) == "a1"


def test_a_higher_priority_goes_first_even_against_affinity_but_never_starves_the_rest():
    now = [0.0]
    s = Scheduler(max_skips=1, max_wait_s=30.0, clock=lambda: now[0])
    levels = {"a": 0, "b": 0, "c": 50, "d": 50, "e": 50}
    keys = {**JOBS, "e": {"xtts"}}

    def choose(queue):
        return s.pick(queue, lambda n: n, keys.get, {"f5tts"}, priority=levels.get)

    assert choose(["a", "b", "c"]) == "c"  # newest, and b holds the loaded model: c waits
    assert s._skips == {}  # passing for priority costs time, not skips
    now[0] = 10.0
    assert choose(["a", "b", "d"]) == "d"
    now[0] = 30.0
    assert choose(["a", "b", "e"]) == "a"  # a was first passed 30 s ago: it runs now
