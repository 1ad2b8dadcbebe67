"""A neighbour growing and shrinking on a 6 GB card beside voicedrop: what the card holds.

    .venv/bin/python benchmarks/neighbours.py [--seconds 60] [--seed 1] [--json]

Modeled, as FakeDevice models the card: a 6 GB FakeDevice and a fake NVML over it
(voicedrop.testing), the residency manager under the NORMAL policy (models stay on the
device after use) keeping 1 GB free for the others, and its neighbour watch polling at
its real rate (0.25 s). Three threads: jobs acquiring random sets of FakeModels (0.4 to 2.5
GB) for short stages, in a loop; a neighbour program (as an editor's NLE or a game would)
that every 0.5 to 2 s takes a new amount of memory — only what is free, as a real program
can — or lets it all go; and a sampler reading the card every millisecond.

Figures: samples where voicedrop's bytes + the neighbour's exceeded the card (goal 0);
the longest the neighbour's headroom stayed taken while voicedrop held something it could
move — not during a stage, whose models are computing (goal ≤ 1 s); out-of-memory errors
in voicedrop's jobs (goal 0); and how often a job waited for the card.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voicedrop import logs
from voicedrop.card import NvmlCard
from voicedrop.config import GB
from voicedrop.pipeline.modelspec import ModelSpec
from voicedrop.pipeline.neighbours import NeighbourWatch
from voicedrop.pipeline.policies import NormalPolicy
from voicedrop.pipeline.residency import ResidencyManager
from voicedrop.testing import FakeDevice, FakeModel, FakeNvml, FakeOutOfMemory

CARD, HEADROOM, NEIGHBOUR = 6 * GB, 1 * GB, 4242


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logs.configure("console", "error")
    rng = random.Random(args.seed)
    device = FakeDevice(CARD)
    nvml = FakeNvml(device)
    manager = ResidencyManager(
        device, NormalPolicy(), warm_budget=16 * GB, reserve=HEADROOM, card_wait_s=60
    )
    watch = NeighbourWatch(manager, NvmlCard(nvml), HEADROOM, frozenset({os.getpid()}))
    lock = threading.Lock()  # the neighbour's allocations and the sampler's readings
    stop = threading.Event()
    figures = {"samples": 0, "over_card": 0, "growths": 0, "jobs": 0, "waits": 0, "oom": 0}
    figures |= {"episodes": 0, "episodes_over_1s": 0}
    episodes: list[float] = []  # how long the headroom has been taken, at each sample
    in_stage = threading.Event()
    specs = {
        key: ModelSpec(key, lambda _d, b=int(gb * GB): FakeModel(b), expected_bytes=int(gb * GB))
        for key, gb in (("xtts", 2.0), ("f5", 2.5), ("rvc", 1.0), ("hubert", 0.4))
    }

    def jobs() -> None:
        manager.on_wait = lambda _m: figures.__setitem__("waits", figures["waits"] + 1)
        while not stop.is_set():
            chosen = rng.sample(sorted(specs), rng.choice((1, 2)))
            try:
                with manager.acquire_all({k: specs[k] for k in chosen}):
                    in_stage.set()
                    time.sleep(rng.uniform(0.05, 0.3))
                    in_stage.clear()
                figures["jobs"] += 1
            except FakeOutOfMemory:
                figures["oom"] += 1
            except Exception:
                in_stage.clear()
            time.sleep(rng.uniform(0.1, 0.5))

    def neighbour() -> None:
        while not stop.is_set():
            with lock:
                want = rng.choice((0, rng.uniform(0.3, 4.5) * GB))
                held = device.others()
                grown = min(int(want), held + device.memory().free)  # only what is free
                nvml.neighbour(NEIGHBOUR, grown)
                figures["growths"] += grown > held
            time.sleep(rng.uniform(0.5, 2.0))

    def sampler() -> None:
        since = None  # when the card last went into the headroom (outside a stage)
        while not stop.is_set():
            with lock:
                used = nvml.nvmlDeviceGetMemoryInfo(0).used
            now = time.perf_counter()
            figures["samples"] += 1
            figures["over_card"] += used > CARD
            if used + HEADROOM > CARD and not in_stage.is_set() and manager.room.busy():
                since = now if since is None else since
                episodes.append(now - since)
            else:
                if since is not None:
                    figures["episodes"] += 1
                    figures["episodes_over_1s"] += now - since > 1.0
                since = None
            time.sleep(0.001)

    threads = [threading.Thread(target=f) for f in (jobs, neighbour, sampler)]
    watch.start()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    watch.close()
    result = {
        **figures,
        "seconds": args.seconds,
        "max_restore_s": round(max(episodes, default=0.0), 3),
        "poll_s": watch.poll_s,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{args.seconds:g} s modeled on a 6 GB card, 1 GB headroom: {figures['growths']} "
        f"neighbour growths, {figures['jobs']} job stages ({figures['waits']} waits for the card)"
    )
    print(
        f"longest growth → headroom free again: {result['max_restore_s']:.3f} s [goal <= 1 s]; "
        f"{figures['episodes_over_1s']} of {figures['episodes']} took over 1 s"
    )
    print(
        f"samples with voicedrop + the neighbour over the card: {figures['over_card']} of "
        f"{figures['samples']} [goal 0]"
    )
    print(f"out-of-memory errors: {figures['oom']} [goal 0]")


if __name__ == "__main__":
    main()
