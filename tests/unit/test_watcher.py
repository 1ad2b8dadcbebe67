import logging
import threading
import time

from voicedrop.config import Watcher as WatcherSettings
from voicedrop.daemon.index import InboxIndex
from voicedrop.daemon.watcher import StabilityGate, Watcher
from voicedrop.fsutil import filesystem_type, needs_polling
from voicedrop.spool.inbox import InboxFile

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/nas rw,relatime shared:2 - nfs4 nas:/export rw,vers=4.2
41 40 0:36 / /mnt/nas/local rw - tmpfs tmpfs rw
42 22 0:37 / /media/share rw - cifs //host/share rw
43 22 0:38 / /home/u/drive rw - fuse.rclone drive: rw
"""


def test_filesystem_type_takes_the_longest_mount(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert filesystem_type(tmp_path / "x", info) == "ext4"
    assert filesystem_type(__import__("pathlib").Path("/mnt/nas/inbox"), info) == "nfs4"
    assert filesystem_type(__import__("pathlib").Path("/mnt/nas/local/in"), info) == "tmpfs"


def test_network_and_fuse_filesystems_need_polling():
    assert needs_polling("nfs4") and needs_polling("cifs") and needs_polling("fuse.rclone")
    assert not needs_polling("ext4") and not needs_polling(None)


def f(name, size=10, mtime_s=1000.0):
    return InboxFile(__import__("pathlib").Path("/in") / name, size, int(mtime_s * 1e9))


def test_a_file_still_changing_is_not_ready():
    gate = StabilityGate(2.0)
    assert gate.ready([f("a", 10, 999.5)], now=0.0, wall_now=1000.0) == []
    assert gate.ready([f("a", 20, 1000.5)], now=1.0, wall_now=1001.0) == []
    assert gate.ready([f("a", 30, 1001.5)], now=2.5, wall_now=1002.0) == []
    # unchanged for the delay on our own clock
    assert gate.ready([f("a", 30, 1001.5)], now=4.6, wall_now=1002.1) == [f("a", 30, 1001.5)]


def test_a_file_quiet_since_its_mtime_is_ready_at_first_sight():
    gate = StabilityGate(2.0)
    assert gate.ready([f("a", 10, 990.0)], now=0.0, wall_now=1000.0) == [f("a", 10, 990.0)]


def test_a_close_hint_makes_a_file_ready_at_once(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("{}")
    st = path.stat()
    item = InboxFile(path, st.st_size, st.st_mtime_ns)
    gate = StabilityGate(60.0)
    assert gate.ready([item], now=0.0, wall_now=st.st_mtime) == []
    gate.hint_complete(str(path))
    assert gate.ready([item], now=0.0, wall_now=st.st_mtime) == [item]


def test_a_hint_for_an_older_version_does_not_count(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("{")
    gate = StabilityGate(60.0)
    gate.hint_complete(str(path))
    with path.open("a") as fh:
        fh.write('"x": 1}')
    st = path.stat()
    item = InboxFile(path, st.st_size, st.st_mtime_ns)
    assert gate.ready([item], now=0.0, wall_now=st.st_mtime) == []


def test_an_older_file_still_settling_is_not_overtaken_by_a_newer_hinted_one(tmp_path):
    """A manifest dropped just before the watcher started has no hint and waits out the
    delay; one dropped a moment later is hinted at once. It must not run first (FIFO),
    but a file that never settles holds the queue back for twice the delay at most."""
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    older.write_text("{}")
    newer.write_text("{}")
    items = [InboxFile(p, p.stat().st_size, p.stat().st_mtime_ns) for p in (older, newer)]
    wall = newer.stat().st_mtime
    gate = StabilityGate(2.0)
    gate.hint_complete(str(newer))
    assert gate.ready(items, now=0.0, wall_now=wall) == []  # the newer waits for the older
    assert gate.ready(items, now=2.0, wall_now=wall) == items  # the older settled: in order
    growing = StabilityGate(2.0)
    growing.hint_complete(str(newer))
    for step in range(4):  # the older one keeps changing: never complete
        changing = InboxFile(older, 10 + step, int((wall + step) * 1e9))
        ready = growing.ready([changing, items[1]], now=float(step * 1.5), wall_now=wall + step)
    assert ready == [items[1]]  # after 2 x the delay, the queue goes on without it


def test_falls_back_to_polling_when_inotify_cannot_be_set_up(tmp_path):
    def no_inotify():
        raise OSError(28, "inotify watch limit reached")

    watcher = Watcher(
        InboxIndex(tmp_path),
        WatcherSettings(mode="auto", poll_interval_s=0.1),
        StabilityGate(0.0),
        threading.Event(),
        inotify_factory=no_inotify,
    )
    with watcher:
        assert watcher.mode == "polling"


def test_inotify_wakes_the_loop_and_hints_on_close(tmp_path):
    wake = threading.Event()
    gate = StabilityGate(60.0)
    with Watcher(InboxIndex(tmp_path), WatcherSettings(mode="inotify"), gate, wake) as watcher:
        assert watcher.mode == "inotify"
        path = tmp_path / "job.json"
        path.write_text("{}")
        assert wake.wait(5)
        st = path.stat()
        item = InboxFile(path, st.st_size, st.st_mtime_ns)
        for _ in range(100):
            if gate.ready([item], now=0.0, wall_now=st.st_mtime):
                break
            threading.Event().wait(0.02)
        assert gate.ready([item], now=0.0, wall_now=st.st_mtime) == [item]


def test_polling_mode_sees_new_files_but_never_calls_them_complete(tmp_path):
    """Polling 'moves' are inode guesses: a file written into a reused inode must still wait."""
    wake = threading.Event()
    gate = StabilityGate(60.0)
    old = tmp_path / "old.json"
    old.write_text("{}")
    settings = WatcherSettings(mode="polling", poll_interval_s=0.05)
    with Watcher(InboxIndex(tmp_path), settings, gate, wake) as watcher:
        assert watcher.mode == "polling"
        time.sleep(0.2)
        old.unlink()
        new = tmp_path / "new.json"
        new.write_text('{"partial": ')  # ext4 hands it the freed inode: a 'move' to a poller
        wake.clear()
        assert wake.wait(5)
        time.sleep(0.2)
        st = new.stat()
        item = InboxFile(new, st.st_size, st.st_mtime_ns)
        assert gate.ready([item], now=0.0, wall_now=st.st_mtime) == []


def test_an_inotify_queue_overflow_triggers_a_full_listing(tmp_path):
    wake = threading.Event()
    index = InboxIndex(tmp_path)
    with Watcher(index, WatcherSettings(mode="inotify"), StabilityGate(0.0), wake):
        index.files()
        listings = index.listings
        (tmp_path / "unseen.json").write_text("{}")  # as if its event was lost
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert wake.is_set()
        assert "unseen.json" in [f.path.name for f in index.files()]
        assert index.listings == listings + 1
