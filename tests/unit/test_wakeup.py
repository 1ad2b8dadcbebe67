import os
import signal
import threading
import time

from voicedrop.daemon.wakeup import Wakeup


def test_set_wait_clear():
    wake = Wakeup()
    assert not wake.is_set() and not wake.wait(0.01)
    wake.set()
    wake.set()
    assert wake.is_set() and wake.wait(0)
    wake.clear()
    assert not wake.is_set()
    wake.close()


def test_set_from_another_thread_wakes_a_waiter():
    wake = Wakeup()
    timer = threading.Timer(0.05, wake.set)
    timer.start()
    started = time.monotonic()
    assert wake.wait(60)
    assert time.monotonic() - started < 30, "woke by the timeout, not by the set"
    timer.join()


def test_set_from_a_signal_handler_wakes_the_waiting_main_thread():
    """The handler runs on the very thread that waits: where threading.Event can deadlock."""
    wake = Wakeup()
    previous = signal.signal(signal.SIGUSR1, lambda *_: wake.set())
    try:
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        started = time.monotonic()
        assert wake.wait(60)
        assert time.monotonic() - started < 30, "woke by the timeout, not by the set"
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_full_pipe_still_means_set():
    wake = Wakeup()
    for _ in range(100_000):
        wake.set()
    assert wake.is_set()
    wake.clear()
    assert not wake.is_set()
