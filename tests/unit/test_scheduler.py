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
