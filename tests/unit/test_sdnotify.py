import os
import socket

from voicedrop.daemon.sdnotify import Notifier


def test_notify_sends_datagrams_to_notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier(
            {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
        )
        notifier.notify(ready="1", status="idle")
        assert server.recv(1024) == b"READY=1\nSTATUS=idle"
    assert notifier.watchdog_s == 20.0


def test_without_systemd_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.notify(ready="1")


def test_watchdog_for_another_pid_is_ignored():
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None
