"""The LOW_VRAM contract with real engines: xtts → rvc on tiny models."""

from __future__ import annotations

from voicedrop.tiny.build import RVC_MODEL, XTTS_VOICE

XTTS_RVC = {
    "text": "Hello there.",
    "tts": {"engine": "xtts", "voice": XTTS_VOICE},
    "convert": {"engine": "rvc", "model": RVC_MODEL, "method": "pm"},
}


READS = ("load", "prefetch")  # from disk: onto the device, or ahead into host memory


def moves(outcome):
    return [(e.event, e.key, e.src, e.dst) for e in outcome.events]


def test_low_vram_xtts_leaves_before_hubert_and_rvc_arrive(make_runner):
    runner = make_runner(low_vram=True)
    outcome = runner.run(XTTS_RVC)
    assert outcome.error is None, outcome.error.message
    events = moves(outcome)
    placed = [i for i, e in enumerate(events) if e[3] == "device"]
    left = {e[1]: i for i, e in enumerate(events) if e[2] == "device"}
    keys = [events[i][1] for i in placed]
    assert keys == ["xtts", "hubert", "rvc:tiny-rvc"]
    assert left["xtts"] < placed[1], "xtts still on the device when hubert was placed"
    assert set(left) == set(keys), "a model stayed on the device"
    assert runner.manager.resident_keys("device") == set()
    assert outcome.vram_after is not None
    assert outcome.vram_after.allocated_gb == 0.0
    assert outcome.vram_after.low_vram_mode is True


def test_normal_mode_loads_each_model_from_disk_exactly_once(make_runner):
    runner = make_runner(low_vram=False)
    loads: dict[str, int] = {}
    for _ in range(3):
        outcome = runner.run(XTTS_RVC)
        assert outcome.error is None, outcome.error.message
        for event in outcome.events:
            if event.event in READS:
                loads[event.key] = loads.get(event.key, 0) + 1
    assert loads == {"xtts": 1, "hubert": 1, "rvc:tiny-rvc": 1}
    assert runner.manager.resident_keys("device") == {"xtts", "hubert", "rvc:tiny-rvc"}


def test_two_rvc_voices_in_a_row_share_one_hubert(make_runner, tiny):
    second = {"engine": "rvc", "path": "rvc/voice.pth"}  # the same file under another name
    runner = make_runner(
        low_vram=True,
        models={RVC_MODEL: {"engine": "rvc", "path": "rvc/voice.pth"}, "other": second},
    )
    convert = {"engine": "rvc", "method": "pm"}
    espeak = {"engine": "espeak"}
    a = runner.run({"text": "One.", "tts": espeak, "convert": {**convert, "model": RVC_MODEL}})
    b = runner.run({"text": "Two.", "tts": espeak, "convert": {**convert, "model": "other"}})
    assert a.error is None and b.error is None
    hubert = [e.event for o in (a, b) for e in o.events if e.key == "hubert"]
    assert sum(hubert.count(read) for read in READS) == 1
    assert hubert.count("promote") == 2 - hubert.count("load")
    voices = [
        e.key for o in (a, b) for e in o.events if e.event in READS and e.key.startswith("rvc:")
    ]
    assert voices == ["rvc:tiny-rvc", "rvc:other"]


def test_the_queue_learns_a_jobs_model_keys_from_its_engines(make_runner):
    """Affinity asks the engines which models a queued job needs, without loading any."""
    from voicedrop.manifest import Manifest

    runner = make_runner()
    rvc = {"engine": "rvc", "model": RVC_MODEL, "method": "rmvpe"}
    keys = runner.runner.planner.keys(
        Manifest.model_validate(
            {"text": "x", "tts": {"engine": "f5tts", "voice": "tiny-f5"}, "convert": rvc}
        )
    )
    assert keys == {"f5tts", "vocos", "hubert", "rmvpe", "rvc:tiny-rvc"}
    assert runner.manager.models() == {}, "asking for keys must not load a model"
    unknown = Manifest.model_validate({"text": "x", "tts": {"engine": "nope"}})
    assert runner.runner.planner.keys(unknown) == set()
