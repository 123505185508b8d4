"""The dashboard at ``/`` (I2), driven in a real headless Chromium through
Playwright against a real ``sona serve`` subprocess (tiny.en, audio from
tests/audio): upload, live progress, transcript with playback, downloads,
cancel, models, the API-key prompt, a daemon restart, a narrow screen, and the
live view fed by a fake microphone playing real speech.

Screenshots go to the test's tmp_path and, when ``SONA_TEST_ARTIFACTS`` is set,
to ``$SONA_TEST_ARTIFACTS/dashboard/``. Debian's ``chromium`` is used
(Playwright's own browser download does not work everywhere); the tests skip
only when /usr/bin/chromium is absent."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio_factory import concat_wav
from tests.conftest import AUDIO, Daemon

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium); "
        "it could not be installed here",
    ),
    pytest.mark.slow,  # a real browser against real daemons: minutes
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOB_S = 180_000  # ms; a long file on two shared cores
STEP = 20_000  # ms; anything the feed should show within a few poll intervals

EXTENSIONS = {"text": "txt", "json": "json", "verbose_json": "verbose.json", "srt": "srt",
              "vtt": "vtt", "tsv": "tsv", "jsonl": "jsonl"}  # fmt: skip
Page = Any  # playwright.sync_api.Page; imported lazily so a skip needs no playwright


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    """One Playwright per module: a browser with other flags launches from it too."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Page]]:
    """Pages that fail the test on an uncaught script error."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(url: str, *, width: int = 1280, height: int = 900) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"script errors in the page: {errors}"


@pytest.fixture
def shot(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Save a screenshot as a test artifact."""
    artifacts = os.environ.get("SONA_TEST_ARTIFACTS")

    def take(page: Page, name: str, *, full_page: bool = True) -> Path:
        path = tmp_path / "screenshots" / f"{request.node.name}-{name}.png"
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=full_page)
        if artifacts:
            dest = Path(artifacts) / "dashboard"
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / path.name)
        return path

    return take


@pytest.fixture(scope="module")
def longer_wav(tmp_path_factory: pytest.TempPathFactory, manifest: dict[str, Any]) -> Path:
    """About 260 s of speech: still running when the test gets to click Cancel."""
    out = tmp_path_factory.mktemp("longer") / "longer.wav"
    sentences = [AUDIO / name for name in manifest if name != "stereo.wav"]
    return concat_wav(sentences, out, gap_s=1.0, repeat=8)


def loaded_models(d: Any) -> list[str]:
    """What /v1/models lists as loaded (its OpenAI aliases, such as whisper-1, aside)."""
    return [m["id"] for m in api(d, "/v1/models")["data"] if not m.get("alias_for")]


def api(daemon: Daemon, path: str, *, key: str | None = None) -> Any:
    req = urllib.request.Request(daemon.url + path)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = resp.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def card(page: Page, job_id: str) -> Any:
    return page.locator(f'.job[data-id="{job_id}"]')


def wait_live(page: Page, connects: int = 1) -> None:
    page.wait_for_selector('#conn[data-state="live"]', timeout=STEP)
    page.wait_for_function(
        "n => Number(document.body.dataset.connects) >= n", arg=connects, timeout=STEP
    )


def upload(page: Page, *files: Path) -> list[str]:
    """Upload through the form; the new jobs' ids, in file order."""
    before = set(page.locator(".job").evaluate_all("cs => cs.map(c => c.dataset.id)"))
    page.set_input_files("#files", [str(f) for f in files])
    page.click("#upload-button")
    page.wait_for_function(
        "n => document.querySelectorAll('.job').length >= n",
        arg=len(before) + len(files),
        timeout=STEP,
    )
    ids = page.locator(".job").evaluate_all("cs => cs.map(c => c.dataset.id)")
    new = [i for i in reversed(ids) if i not in before]  # newest first on the page
    assert len(new) == len(files)
    return new


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide"


RECORD_BARS = """() => {
  window.barLog = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const job = r.target.closest('.job');
      if (!job || !r.target.matches('progress.bar')) continue;
      window.barLog.push({id: job.dataset.id, value: Number(r.target.value),
        status: job.dataset.status, text: job.querySelector('.text').textContent});
    }
  }).observe(document.getElementById('jobs'),
             {subtree: true, attributes: true, attributeFilter: ['value']});
}"""


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_upload_watch_progress_read_play_and_download(
    daemon_factory: Any,
    open_page: Callable[..., Page],
    shot: Callable[..., Path],
    long_wav: Path,
    fox_wav: Path,
    manifest: dict[str, Any],
) -> None:
    """One daemon and one page through a user's session, a step at a time (the
    two-minute job is run once, not once per step)."""
    # One window a step, so progress moves several times on a two-minute file.
    d = daemon_factory("--model", "tiny.en", env={"SONA_BATCH_SIZE": "1"})
    page = open_page(d.url + "/")
    media: list[tuple[str, int]] = []
    page.on("response", lambda r: media.append((r.url, r.status)) if "/audio" in r.url else None)
    talk_id, fox_id = _upload_and_watch_progress(page, shot, long_wav, fox_wav)
    # The options went through: word timestamps were asked for.
    verbose = api(d, f"/v1/jobs/{fox_id}/transcript?format=verbose_json")
    assert verbose["words"], "word_timestamps was not sent"
    _read_and_download(page, fox_id, manifest["fox.wav"]["keywords"])
    _play_from_a_segment(page, shot, talk_id, media)
    _unload_and_load_a_model(page, d)
    _narrow_screen(page, shot, fox_id)


def _upload_and_watch_progress(
    page: Page, shot: Callable[..., Path], long_wav: Path, fox_wav: Path
) -> tuple[str, str]:
    """The bar moves: values strictly between 0 and 1 while processing, with the
    partial text showing, never going back, ending full."""
    wait_live(page)
    assert page.locator('#models .model[data-id="tiny.en"]').count() == 1
    assert page.inner_text("#worker") == "running"
    page.evaluate(RECORD_BARS)
    page.check("#opt-words")
    talk_id, fox_id = upload(page, long_wav, fox_wav)
    page.wait_for_selector(f'.job[data-id="{talk_id}"][data-status="processing"]', timeout=STEP)
    shot(page, "processing")
    page.wait_for_selector(f'.job[data-id="{talk_id}"][data-status="completed"]', timeout=JOB_S)
    page.wait_for_selector(f'.job[data-id="{fox_id}"][data-status="completed"]', timeout=JOB_S)
    log = [e for e in page.evaluate("() => window.barLog") if e["id"] == talk_id]
    values = [e["value"] for e in log]
    mid = [e for e in log if 0 < e["value"] < 1 and e["status"] == "processing"]
    assert len({e["value"] for e in mid}) >= 2, log
    assert any(e["text"] for e in mid), "no partial text while processing"
    assert values == sorted(values) and values[-1] == 1.0, values
    talk_card = card(page, talk_id)
    assert talk_card.locator(".pct").inner_text() == "100%"
    assert "RTF " in talk_card.locator(".meta").inner_text()
    assert talk_card.locator(".cancel").is_hidden()
    shot(page, "completed")
    return talk_id, fox_id


def _read_and_download(page: Page, fox_id: str, keywords: list[str]) -> None:
    """The transcript, with timestamps; every format downloads, named after the upload."""
    card(page, fox_id).locator(".open").click()
    page.wait_for_selector("#t-segments .segment", timeout=STEP)
    text = page.inner_text("#t-segments").lower()
    for word in keywords:
        assert word in text, text
    assert "0:00.0 →" in page.inner_text("#t-segments .segment .time >> nth=0")
    for fmt, ext in EXTENSIONS.items():
        with page.expect_download(timeout=STEP) as info:
            page.click(f'#t-downloads [data-format="{fmt}"]')
        download = info.value
        assert download.suggested_filename == f"fox.{ext}"
        body = Path(download.path()).read_text()
        assert "fox" in body.lower(), (fmt, body[:200])
        if fmt == "srt":
            assert "00:00:00,000 -->" in body
        if fmt == "vtt":
            assert body.startswith("WEBVTT")
    page.click("#t-close")


def _play_from_a_segment(
    page: Page, shot: Callable[..., Path], talk_id: str, media: list[tuple[str, int]]
) -> None:
    """Click a segment of the long job: the player jumps there and plays it."""
    card(page, talk_id).locator(".open").click()
    segments = page.locator("#t-segments .segment")
    segments.nth(2).wait_for(timeout=STEP)
    assert segments.count() >= 5
    start = float(segments.nth(2).get_attribute("data-start") or "0")
    assert start > 0
    shot(page, "transcript", full_page=False)
    page.wait_for_function("() => document.getElementById('t-audio').readyState >= 1", timeout=STEP)
    segments.nth(2).click()
    page.wait_for_function(
        "s => { const a = document.getElementById('t-audio');"
        " return a.currentTime > s + 0.2 || document.querySelector('.segment.playing'); }",
        arg=start,
        timeout=STEP,
    )
    assert page.evaluate("() => document.getElementById('t-audio').currentTime") >= start
    assert any(status == 206 for _, status in media), f"no ranged audio response: {media}"
    page.click("#t-close")


def _unload_and_load_a_model(page: Page, d: Daemon) -> None:
    page.click('#models .model[data-id="tiny.en"] button')
    page.wait_for_selector('#models .model[data-id="tiny.en"]', state="detached", timeout=STEP)
    assert loaded_models(d) == []
    page.fill("#load-name", "tiny.en")
    page.click("#load-button")
    page.wait_for_selector('#models .model[data-id="tiny.en"]', timeout=STEP * 3)
    assert "Loaded tiny.en" in page.inner_text("#models-msg")
    assert loaded_models(d) == ["tiny.en"]


def _narrow_screen(page: Page, shot: Callable[..., Path], fox_id: str) -> None:
    """Nothing sticks out sideways; the transcript still opens."""
    page.set_viewport_size({"width": 390, "height": 844})
    no_horizontal_scroll(page)
    shot(page, "narrow")
    card(page, fox_id).locator(".open").click()
    page.wait_for_selector("#t-segments .segment", timeout=STEP)
    no_horizontal_scroll(page)
    shot(page, "narrow-transcript", full_page=False)


def test_search_then_play_a_hit_from_its_segment(
    daemon_factory: Any, open_page: Callable[..., Page], shot: Callable[..., Path], tmp_path: Path
) -> None:
    """Search box → hits with the matched words marked → a click opens the
    job and plays from the segment: the player's currentTime is its start."""
    both = concat_wav([AUDIO / "weather.wav", AUDIO / "fox.wav"], tmp_path / "both.wav", gap_s=1.0)
    d = daemon_factory("--model", "tiny.en")
    page = open_page(d.url + "/")
    wait_live(page)
    [both_id, report_id] = upload(page, both, AUDIO / "report.wav")
    for job_id in (both_id, report_id):
        page.wait_for_selector(f'.job[data-id="{job_id}"][data-status="completed"]', timeout=JOB_S)
    page.fill("#search-q", "fox")
    page.click("#search-button")
    hits = page.locator("#hits .hit")
    hits.first.wait_for(timeout=STEP)
    assert hits.count() == 1 and hits.first.get_attribute("data-job") == both_id
    assert [m.lower() for m in hits.first.locator("mark").all_inner_texts()] == ["fox"]
    start = float(hits.first.get_attribute("data-start") or "0")
    end = float(hits.first.get_attribute("data-end") or "0")
    assert start > 2, "the fox is said after the weather"
    [api_hit] = api(d, "/v1/search?q=fox")["data"]
    assert (api_hit["start"], api_hit["end"]) == (start, end)
    shot(page, "search")
    hits.first.click()
    page.wait_for_selector("#t-segments .segment.found", timeout=STEP)
    page.wait_for_function(
        "s => { const a = document.getElementById('t-audio');"
        " return a.readyState >= 1 && a.currentTime >= s; }",
        arg=start,
        timeout=STEP,
    )
    now = page.evaluate("() => document.getElementById('t-audio').currentTime")
    assert start <= now <= end + 0.5, (start, now, end)
    found = page.locator("#t-segments .segment.found")
    assert float(found.get_attribute("data-start") or "-1") == start
    shot(page, "search-played", full_page=False)
    page.click("#t-close")
    page.fill("#search-q", '"unbalanced')
    page.click("#search-button")
    page.wait_for_function(
        "() => document.getElementById('search-msg').textContent.includes('unbalanced')",
        timeout=STEP,
    )
    assert page.locator("#hits .hit").count() == 0


def test_cancel_a_running_and_a_queued_job(
    daemon_factory: Any,
    open_page: Callable[..., Page],
    shot: Callable[..., Path],
    longer_wav: Path,
    tmp_path: Path,
) -> None:
    # One job in flight at a time, so the second really waits in the queue.
    d = daemon_factory("--model", "tiny.en", env={"SONA_MAX_JOBS_IN_FLIGHT": "1"})
    page = open_page(d.url + "/")
    wait_live(page)
    second = shutil.copy(longer_wav, tmp_path / "second.wav")
    running, queued = upload(page, longer_wav, Path(second))
    page.wait_for_selector(f'.job[data-id="{running}"][data-status="processing"]', timeout=STEP)
    assert card(page, queued).get_attribute("data-status") == "queued"
    # Where it stands: first in the queue (the ETA comes once speed is measured).
    where = f'.job[data-id="{queued}"] .standing:has-text("1st in queue")'
    page.wait_for_selector(where, timeout=STEP)
    card(page, running).locator(".cancel").click()
    # The running job stops after the engine stage in flight: long on a loaded machine.
    page.wait_for_selector(f'.job[data-id="{running}"][data-status="cancelled"]', timeout=3 * STEP)
    card(page, queued).locator(".cancel").click()
    page.wait_for_selector(f'.job[data-id="{queued}"][data-status="cancelled"]', timeout=3 * STEP)
    shot(page, "cancelled")
    for job_id in (running, queued):
        assert api(d, f"/v1/jobs/{job_id}")["status"] == "cancelled"
        assert card(page, job_id).locator(".cancel").is_hidden()
    assert page.inner_text("#queue-size") == "0"


def test_api_key_prompt_kept_in_session_storage(
    daemon_factory: Any, open_page: Callable[..., Page], shot: Callable[..., Path], fox_wav: Path
) -> None:
    key = "dash-board-key"
    d = daemon_factory("--model", "tiny.en", env={"SONA_API_KEYS": json.dumps([key])})
    page = open_page(d.url + "/")
    page.wait_for_selector("#key-dialog[open]", timeout=STEP)
    assert page.get_attribute("#conn", "data-state") == "locked"
    assert page.locator(".job").count() == 0
    shot(page, "key-prompt", full_page=False)

    page.fill("#key-input", "wrong")
    page.click("#key-save")
    page.wait_for_selector("#key-dialog[open]", timeout=STEP)
    assert "refused" in page.inner_text("#key-reason")
    page.fill("#key-input", key)
    page.click("#key-save")
    wait_live(page)
    assert page.evaluate("() => sessionStorage.getItem('sona.apiKey')") == key

    # The upload, the feed and the audio all carry the key.
    (fox_id,) = upload(page, fox_wav)
    page.wait_for_selector(f'.job[data-id="{fox_id}"][data-status="completed"]', timeout=JOB_S)
    assert api(d, f"/v1/jobs/{fox_id}", key=key)["status"] == "completed"
    card(page, fox_id).locator(".open").click()
    page.wait_for_selector("#t-segments .segment", timeout=STEP)
    page.wait_for_function(
        "() => document.getElementById('t-audio').src.startsWith('blob:')", timeout=STEP
    )
    page.click("#t-close")

    # A reload in the same tab asks nothing: the key is in session storage.
    page.reload()
    wait_live(page)
    assert not page.locator("#key-dialog").is_visible()
    assert card(page, fox_id).get_attribute("data-status") == "completed"


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_keeps_working_across_a_daemon_restart(
    daemon_factory: Any,
    open_page: Callable[..., Page],
    shot: Callable[..., Path],
    fox_wav: Path,
    tmp_path: Path,
) -> None:
    first = daemon_factory("--model", "tiny.en")
    page = open_page(first.url + "/")
    wait_live(page)
    (fox_id,) = upload(page, fox_wav)
    page.wait_for_selector(f'.job[data-id="{fox_id}"][data-status="completed"]', timeout=JOB_S)

    assert first.stop() == 0
    page.wait_for_selector('#conn[data-state="reconnecting"]', timeout=STEP)
    assert card(page, fox_id).get_attribute("data-status") == "completed"
    shot(page, "reconnecting", full_page=False)

    second = daemon_factory(
        "--port", str(first.port), "--model", "tiny.en", data_dir=first.data_dir
    )
    assert second.port == first.port
    wait_live(page, connects=2)
    # It reconnected with Last-Event-ID, and the snapshot replaced its state.
    assert page.evaluate("() => document.body.dataset.resumedFrom") != ""
    assert card(page, fox_id).get_attribute("data-status") == "completed"
    (again,) = upload(page, fox_wav)
    page.wait_for_selector(f'.job[data-id="{again}"][data-status="completed"]', timeout=JOB_S)
    shot(page, "after-restart")


def live_speech(out: Path) -> Path:
    """fox.wav and weather.wav with silence before, between and after: what the
    fake microphone plays (16-bit PCM WAV, as Chromium's fake capture reads)."""
    clips = []
    for name in ("fox.wav", "weather.wav"):
        with wave.open(str(AUDIO / name), "rb") as src:
            params = src.getparams()
            clips.append(src.readframes(params.nframes))
    assert (params.nchannels, params.sampwidth) == (1, 2)

    def silence(s: float) -> bytes:
        return bytes(int(s * params.framerate) * 2)

    with wave.open(str(out), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(silence(1.0) + clips[0] + silence(1.5) + clips[1] + silence(3.0))
    return out


def fake_mic_browser(pw: Any, wav: Path | None = None) -> Any:
    """Chromium whose microphone is granted without asking and plays ``wav``
    once (without one: Chromium's beeping fake device)."""
    args = [*ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}%noloop")
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=args)


RECORD_PARTIALS = """() => {
  window.partials = [];
  new MutationObserver(() => {
    for (const li of document.querySelectorAll('#live-lines li[data-state="speaking"]')) {
      if (li.textContent) window.partials.push(li.textContent);
    }
  }).observe(document.getElementById('live-lines'),
             {subtree: true, childList: true, characterData: true});
}"""
FINAL_TEXT = """() => [...document.querySelectorAll('#live-lines li[data-state="final"]')]
  .map(li => li.textContent).join(' ').toLowerCase()"""


@pytest.mark.slow  # a real daemon or model for 10 s or more
def test_live_view_microphone_to_text_to_a_completed_job(
    daemon_factory: Any,
    pw: Any,
    shot: Callable[..., Path],
    tmp_path: Path,
    manifest: dict[str, Any],
) -> None:
    """Start → the fake microphone's speech goes over /v1/realtime (AudioWorklet,
    PCM16 at 24 kHz) → each turn's text appears; Stop → the session's job is
    completed with that text, in the API and in the jobs list. An API key is
    on: the page passes it as the WebSocket subprotocol."""
    speech = live_speech(tmp_path / "speech.wav")
    key = "live-page-key"
    # Partial text on: fox.wav (7 s) is decoded every 2 s while it is spoken.
    env = {"SONA_API_KEYS": json.dumps([key]), "SONA_LIVE_PARTIAL_S": "2"}
    d = daemon_factory("--model", "tiny.en", env=env)
    chromium = fake_mic_browser(pw, speech)
    errors: list[str] = []
    try:
        page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(d.url + "/")
        page.wait_for_selector("#key-dialog[open]", timeout=STEP)
        page.fill("#key-input", key)
        page.click("#key-save")
        wait_live(page)
        page.evaluate(RECORD_PARTIALS)
        page.fill("#live-language", "en")
        page.click("#live-start")
        page.wait_for_selector('body[data-live="listening"]', timeout=STEP)
        assert page.get_attribute("body", "data-live-capture") == "worklet"
        heard = "t => t.includes('fox') && t.includes('weather')"
        page.wait_for_function(f"() => ({heard})(({FINAL_TEXT})())", timeout=JOB_S)
        shot(page, "live")
        said = page.evaluate(FINAL_TEXT)
        for word in ("quick", "brown", "fox", "sunny", "breeze"):
            assert word in said, said
        assert page.locator("#live-error").is_hidden(), page.inner_text("#live-error")
        # Words showed while the fox sentence was still being spoken (deltas
        # before its commit: with live_partial_s off they come only after it).
        partials = page.evaluate("() => window.partials")
        assert any("fox" in p.lower() or "quick" in p.lower() for p in partials), partials
        page.click("#live-stop")
        page.wait_for_selector('body[data-live="stopped"]', timeout=STEP * 3)
        job_id = page.get_attribute("#live-job", "data-job")
        assert job_id
        job = _finished(d, job_id, key)
        assert job["status"] == "completed", job
        recorded = job["text"].lower()
        for word in ("fox", "weather"):
            assert word in recorded, recorded
        # The microphone's audio, kept: up to the weather's end at least (its text
        # came), at most the whole file (17.1 s); a wrong resampling rate is off.
        assert 12.5 < job["duration"] < 17.5, job["duration"]
        page.wait_for_selector(f'.job[data-id="{job_id}"][data-status="completed"]', timeout=STEP)
        shot(page, "live-stopped")
        page.set_viewport_size({"width": 390, "height": 844})
        no_horizontal_scroll(page)
        shot(page, "live-narrow")
    finally:
        chromium.close()
    assert errors == [], f"script errors in the page: {errors}"


def _finished(d: Daemon, job_id: str, key: str) -> Any:
    deadline = time.monotonic() + 60
    while True:
        job = api(d, f"/v1/jobs/{job_id}", key=key)
        if job["status"] not in ("queued", "processing") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_live_view_shows_the_servers_error(daemon_factory: Any, pw: Any) -> None:
    """A server that runs no live session says so in an ``error`` event before
    it closes the socket: the page shows that message and can start again."""
    d = daemon_factory("--model", "tiny.en", env={"SONA_LIVE_MAX_SESSIONS": "0"})
    chromium = fake_mic_browser(pw)
    try:
        page = chromium.new_context().new_page()
        page.goto(d.url + "/")
        wait_live(page)
        page.click("#live-start")
        page.wait_for_selector('body[data-live="failed"]', timeout=STEP)
        assert "live_max_sessions" in page.inner_text("#live-error")
        assert page.is_enabled("#live-start") and not page.is_enabled("#live-stop")
        assert page.locator("#live-lines li").count() == 0
    finally:
        chromium.close()
