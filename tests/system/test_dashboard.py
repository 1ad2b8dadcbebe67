"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real
daemon (`voicedrop run --http`) on a loopback port and a real spool.

Screenshots go to $VOICEDROP_ARTIFACTS (default: the test's temporary folder) as the
test's artefacts. Skipped where chromium or Playwright is missing (`.ci/run` installs
chromium; Playwright is a test dependency).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system.test_daemon import Daemon
from tests.system.test_http import Server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.system,
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)"),
]
TOKEN = "a-dashboard-token-0123456789"


def dashboard_daemon(root: Path, command: str = "run", **env: str) -> Server:
    """`voicedrop run --http` (or `serve --http`: the page, no daemon) on `root/spool`,
    LOW_VRAM, with a slow noop engine (each job runs long enough to be seen running) and a
    tape conversion model."""
    lines = [
        "low_vram = true",
        "[watcher]",
        "stable_delay_s = 0.0",
        "[engines.noop]",
        "work_s = 2.0",
        '[voices.narrator]\nengine = "espeak"\nengine_voice = "en-us"',
        '[models.chipmunk]\nengine = "tape"',
        "[http]\ndrills = true",  # the drill engines offered on the page
    ]
    (root / "config.toml").write_text("\n".join(lines) + "\n")
    (root / "spool" / "inbox").mkdir(parents=True)
    return Server(root / "spool", command, VOICEDROP_CONFIG=str(root / "config.toml"), **env)


@pytest.fixture
def page_only(tmp_path: Path) -> Iterator[Server]:
    """The page without a daemon: what is submitted waits, for certain, until `daemon_for`
    starts one (a busy job ahead of it would be a guess of how long each takes)."""
    srv = dashboard_daemon(tmp_path, "serve")
    try:
        yield srv
    finally:
        srv.stop()


def daemon_for(root: Path) -> Daemon:
    """The daemon that runs what the page queued: `voicedrop run`, the same configuration."""
    return Daemon(root / "spool", VOICEDROP_CONFIG=str(root / "config.toml"))


def report(root: Path, job_id: str) -> dict[str, Any]:
    return dict(json.loads((root / "spool" / "outbox" / job_id / "report.json").read_text()))


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("VOICEDROP_ARTIFACTS", tmp_path / "artefacts"))
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Server]:
    srv = dashboard_daemon(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def submitted(page: Any) -> str:
    """The id of the job the page just queued (shown as it is followed)."""
    return str(page.wait_for_selector("#submit-result[data-job]").get_attribute("data-job"))


def states_of(page: Any, job_id: str) -> list[str]:
    return list(page.evaluate("(id) => window.__seen[id] || []", job_id))


WATCH = """() => {
  window.__seen = {};
  const note = () => {
    for (const [list, state] of [["waiting", "waiting"], ["running", "running"], ["jobs", null]]) {
      for (const li of document.querySelectorAll(`#${list} > li[data-job]`)) {
        const id = li.dataset.job, s = state || li.dataset.status;
        const seen = (window.__seen[id] = window.__seen[id] || []);
        if (seen[seen.length - 1] !== s) seen.push(s);
      }
    }
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true});
  note();
}"""


def test_a_job_from_the_form_goes_waiting_running_done_without_a_reload(
    browser: Any, page_only: Server, artefacts: Path, tmp_path: Path
):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(page_only.url + "/")
    page.wait_for_selector("#f-engine option[value=noop]", state="attached")
    page.evaluate(WATCH)
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.fill("textarea[name=text]", "Hello from the dashboard.")
    page.select_option("#f-engine", "noop")
    page.select_option("#f-convert", "chipmunk")
    page.click("#job-form button[type=submit]")
    job_id = submitted(page)
    page.wait_for_selector(f"#waiting li[data-job='{job_id}']")
    daemon = daemon_for(tmp_path)  # now the page's job runs
    try:
        page.wait_for_selector(f"#jobs li[data-job='{job_id}'][data-status=done]", timeout=60_000)
    finally:
        assert daemon.stop() == 0
    assert states_of(page, job_id) == ["waiting", "running", "done"]
    assert navigations == [], "the page reloaded"

    item = page.locator(f"#jobs li[data-job='{job_id}']")
    src = item.locator("audio").first.get_attribute("src")
    assert src and src.endswith(".wav")
    answer = page.request.get(page_only.url + src)
    assert answer.status == 200 and answer.headers["content-type"].startswith("audio/")
    assert answer.body()[:4] == b"RIFF"

    moves = [e for e in report(tmp_path, job_id)["events"] if e.get("at") is not None]
    marks = page.locator(f"#timeline circle.mark[data-job='{job_id}']")
    assert len(moves) >= 4  # LOW: each stage's model placed and sent back
    assert marks.count() == len(moves)
    assert set(marks.evaluate_all("ms => ms.map(m => m.dataset.kind)")) == {
        e["event"] for e in moves
    }
    page.screenshot(path=str(artefacts / "dashboard-1280x800.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(artefacts / "dashboard-phone.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the phone-width page scrolls sideways ({width} px)"


def test_speak_plays_its_result_where_the_user_looks_in_plain_words(
    browser: Any, tmp_path: Path, artefacts: Path
):
    """The shipped configuration on a laptop-sized window: Speak shows the job's end and its
    player under the button, above the fold; the page does not scroll sideways; the drill
    engines are not offered; the header and the memory box speak of the CPU the daemon
    has, with none of the API's field names."""
    srv = Server(tmp_path / "spool")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.url + "/")
        page.wait_for_selector("#f-engine option[value=espeak]", state="attached")
        engines = page.eval_on_selector_all("#f-engine option", "os => os.map(o => o.value)")
        converts = page.eval_on_selector_all("#f-convert option", "os => os.map(o => o.value)")
        assert "noop" not in engines and "chipmunk" not in converts
        page.fill("textarea[name=text]", "Hello from the dashboard.")
        page.click("#job-form button[type=submit]")
        job_id = submitted(page)
        player = page.wait_for_selector("#submit-result audio", timeout=60_000)
        assert job_id in page.inner_text("#submit-result") and "done" in page.inner_text(
            "#submit-result"
        )
        assert player.get_attribute("src").startswith(f"/jobs/{job_id}/files/")
        box = player.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, "below the fold"
        assert page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        ), "the page scrolls sideways"
        page.wait_for_selector(f"#jobs li[data-job='{job_id}']")
        header = page.inner_text("#daemon")
        assert "on the CPU" in header and "policy" not in header
        memory = page.inner_text("#memory")
        for jargon in ("available", "cached_models", "promotes", "0.00 GB"):
            assert jargon not in memory, jargon
        page.screenshot(path=str(artefacts / "dashboard-speak-1280x900.png"))
    finally:
        assert srv.stop() == 0


def test_text_and_ids_from_users_are_shown_as_text_never_run(
    browser: Any, daemon: Server, artefacts: Path
):
    page = browser.new_page()
    page.goto(daemon.url + "/")
    page.wait_for_selector("#f-engine option[value=noop]", state="attached")
    evil = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    manifest = {"id": evil, "text": evil, "tts": {"engine": "noop", "options": {"work_s": 0}}}
    upload = {"name": "evil.json", "mimeType": "application/json", "buffer": json.dumps(manifest)}
    page.set_input_files("#manifest-file", files=[{**upload, "buffer": upload["buffer"].encode()}])
    job_id = submitted(page)
    item = page.locator(f"#jobs li[data-job='{job_id}']")
    item.wait_for(timeout=60_000)
    assert evil in item.inner_text()  # shown literally
    assert page.evaluate("window.pwned") is None
    assert page.locator("#jobs img").count() == 0
    page.screenshot(path=str(artefacts / "dashboard-escaped.png"))
    # nothing changed since: the page's poll costs a 304, no body (a heartbeat of the daemon
    # may refresh its memory figures in between: then the next pair)
    statuses = []
    for _ in range(3):
        first = page.request.get(daemon.url + "/api/dashboard")
        tag = {"If-None-Match": first.headers["etag"]}
        statuses.append(
            (first.status, page.request.get(daemon.url + "/api/dashboard", headers=tag).status)
        )
        if statuses[-1] == (200, 304):
            break
    assert statuses[-1] == (200, 304), statuses


def test_with_a_token_configured_the_page_asks_for_it_and_sends_it(browser: Any, tmp_path: Path):
    d = dashboard_daemon(tmp_path, VOICEDROP_HTTP__TOKEN=TOKEN)
    try:
        page = browser.new_page()
        page.goto(d.url + "/")
        page.wait_for_selector("#token-form:not([hidden])")
        page.fill("#token", TOKEN)
        page.click("#token-form button")
        page.wait_for_selector("#f-engine option[value=noop]", state="attached")
        assert "not running" not in page.inner_text("#daemon")
        page.keyboard.press("Tab")  # the form is reachable from the keyboard
        focused = page.evaluate("document.activeElement && document.activeElement.tagName")
        assert focused in {"A", "BUTTON", "INPUT", "TEXTAREA", "SELECT", "DIV"}
    finally:
        d.stop()


def test_a_waiting_job_is_cancelled_and_retried_from_the_page(
    browser: Any, page_only: Server, artefacts: Path, tmp_path: Path
):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(page_only.url + "/")
    page.wait_for_selector("#f-engine option[value=noop]", state="attached")
    voices = page.inner_text("#voices")
    assert "narrator" in voices and "shimmer" in voices  # OpenAI's names, mapped
    page.fill("textarea[name=text]", "Wait for me. " * 20)
    page.select_option("#f-engine", "noop")
    assert page.locator("#f-convert-more").is_hidden()
    page.select_option("#f-convert", "chipmunk")
    page.select_option("select[name=method]", "pm")  # a pitch method only with a conversion
    page.click("#job-form button[type=submit]")
    job_id = submitted(page)
    waiting = page.locator(f"#waiting li[data-job='{job_id}']")
    waiting.wait_for(timeout=60_000)
    assert "…" in waiting.inner_text() and "Wait for me. Wait" in waiting.inner_text()
    waiting.locator("button:has-text('cancel')").click()
    failed = page.locator(f"#jobs li[data-job='{job_id}'][data-status=failed]")
    failed.wait_for(timeout=60_000)
    assert "cancelled" in failed.inner_text()
    failed.locator("button:has-text('retry')").click()
    page.wait_for_selector(f"#submit-result:has-text('{job_id} again as')")
    again = submitted(page)  # followed too, like a job from the form
    assert again != job_id and f"again as {again}" in page.inner_text("#submit-result")
    daemon = daemon_for(tmp_path)
    try:
        page.wait_for_selector(f"#jobs li[data-job='{again}'][data-status=done]", timeout=60_000)
        page.wait_for_selector("#h-memory:has-text('no GPU')")  # this daemon has none
    finally:
        assert daemon.stop() == 0
    assert report(tmp_path, again)["manifest"]["convert"]["method"] == "pm"
    page.screenshot(path=str(artefacts / "dashboard-phone-cancel-retry.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the phone-width page scrolls sideways ({width} px)"


def test_the_device_worker_is_shown_while_it_lives(browser: Any, tmp_path: Path):
    srv = dashboard_daemon(tmp_path, VOICEDROP_RESIDENCY__WORKER="process")
    try:
        job = srv.http.post("/tts/synthesize?wait=60", data={"text": "Hi.", "tts_engine": "espeak"})
        assert job.status_code == 200, job.text
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(srv.url)
        shown = page.locator("#workers li").first
        shown.wait_for(timeout=30_000)
        line = shown.inner_text()
    finally:
        srv.stop()
    assert line.startswith("device worker process: ready (pid ") and "espeak" in line, line
