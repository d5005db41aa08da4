"""The operator's control page (GET /control/) in a real browser: a real livekit-server, a real `bentoml serve`
directing a room of five camera participants, and Debian's Chromium driven by Playwright. The page shows every
camera's score and the tally, plays the program through the LiveKit JS client (joined with an operator token from
live_token), and its lock button goes through the service's authorised `live_override` (bearer token; the same
validation and queue as an operator's data packet): the service's live_status then reports the camera on program with
reason override_lock, and the page's tally follows. Without the service token the page shows an auth error, never data."""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.test_service import TOKEN, error_of, get, poll, post, room_status, serve_env, started, stopped

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
LIVEKIT_JS = ROOT / "bento" / "control" / "vendor" / "livekit-client.umd.js"
# how this machine runs Chromium (/work/.library/env/machines/polyglot.md): no sandbox as root, no GPU, and no
# background connections (the network is closed); Playwright gives every launch a fresh, empty profile
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOM = "control-page"
CAMERAS = [f"cam{i}" for i in range(1, 6)]
SIZE = (384, 216)  # small pictures (the frame stamp needs 328 px): five publishers, the director and a browser share
FPS = 10           # two cores
ON_AIR, LOCKED = re.compile(r"\bprogram\b"), re.compile(r"\bprogram\b.*\blocked\b")  # a card's tally


def _setup_problem() -> str:
    if not CHROMIUM.is_file():
        return f"Chromium is not installed at {CHROMIUM}: run ./dev.sh setup (apt-get install chromium)"
    if not LIVEKIT_JS.is_file():
        return f"the LiveKit JS client is not vendored at {LIVEKIT_JS.relative_to(ROOT)}: run ./dev.sh setup"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing from .venv: run ./dev.sh setup (requirements.lock)"
    return ""


class Studio:
    """Five camera participants (runtime.rig.ScriptedCamera: stamped frames of a real clip; cam1 with a tone for the
    program sound) publishing from their own thread's event loop while the test drives the service and the browser."""

    def __init__(self, server: dict, room: str):
        from runtime import rig
        from runtime.media import SAMPLE_RATE, iter_frames
        from runtime.models import sample_video

        frames = [f for _, f in iter_frames(sample_video("carphone_pristine.mp4"), FPS, SIZE)][:20]
        tone = (0.1 * np.sin(2 * math.pi * 440 * np.arange(SAMPLE_RATE * 600) / SAMPLE_RATE)).astype(np.float32)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="studio", daemon=True)
        self.thread.start()
        self.stop = asyncio.Event()
        t0 = time.monotonic()
        self.futures = [asyncio.run_coroutine_threadsafe(
            rig.ScriptedCamera(name, frames, (40 * i, 255 - 40 * i, 120), tone if name == "cam1" else None, fps=FPS,
                               size=SIZE).run(server, room, t0, self.stop), self.loop)
            for i, name in enumerate(CAMERAS)]

    def check(self) -> None:
        for f in self.futures:
            if f.done():
                raise AssertionError(f"a camera stopped publishing: {f.exception()!r}")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        errors = []
        for f in self.futures:
            try:
                f.result(timeout=20)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not errors, errors


@pytest.fixture(scope="module")
def control_service(tmp_path_factory, livekit_server):
    problem = _setup_problem()
    if problem:
        pytest.fail(problem)
    data = tmp_path_factory.mktemp("svc-control")
    studio = Studio(livekit_server, ROOM)  # the cameras join while the service starts
    env = serve_env(data, AIOBS_SERVICE_TOKEN=TOKEN, AIOBS_LIVEKIT_URL=livekit_server["url"],
                    AIOBS_LIVEKIT_API_KEY=livekit_server["api_key"],
                    AIOBS_LIVEKIT_API_SECRET=livekit_server["api_secret"],
                    AIOBS_YOLO_MODEL="yolo11n.yaml")  # the real architecture's cost, no weights to load
    try:
        proc, base = started(data, env)
    except BaseException:
        studio.close()
        raise
    try:
        code, r = post(base + "/live_start", {"room": ROOM, "program_size": [320, 180], "program_fps": FPS})
        assert code == 200 and r["state"] == "starting", r
        yield base, data, studio
    finally:
        stopped(proc)
        studio.close()


def _launch(pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


def test_control_page_serves_its_files_and_live_token_is_for_operators(control_service):
    base, _, _ = control_service
    for path in ("/control/", "/control"):
        code, html = get(base + path)
        assert code == 200 and "control.js" in html, (path, code)
    with urllib.request.urlopen(base + "/control/", timeout=10) as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp and r.headers["Cache-Control"] == "no-store", csp
    for name, kind in [("control.js", "javascript"), ("control.css", "text/css"),
                       ("vendor/livekit-client.umd.js", "javascript")]:
        with urllib.request.urlopen(f"{base}/control/static/{name}", timeout=10) as r:
            assert r.status == 200 and kind in r.headers["Content-Type"], name
    for name in ("../service.py", "control.html", "vendor/VERSION", "%2e%2e/service.py"):  # a fixed list, nothing else
        code, body = get(f"{base}/control/static/{name}")
        assert code == 404, (name, code)
    code, body = post(base + "/live_token", {"room": ROOM, "identity": "ann"}, token=None)
    assert code == 401 and error_of(body)["detail"][0]["loc"] == ["header", "authorization"]
    code, body = post(base + "/live_token", {"room": "nobody", "identity": "ann"})
    assert code == 404 and error_of(body)["detail"][0]["loc"] == ["room"]
    code, body = post(base + "/live_token", {"room": ROOM, "identity": "ann\u202e"})
    assert code == 400 and error_of(body)["detail"][0]["loc"] == ["identity"]
    code, r = post(base + "/live_token", {"room": ROOM, "identity": "ann"})
    assert code == 200 and r["url"].startswith("ws://127.0.0.1:") and r["identity"] == "operator:ann", r
    from livekit import api  # the token is an operator's: the role the director obeys, no media publishing

    claims = api.TokenVerifier("devkey", "secretsecretsecretsecretsecretsecret").verify(r["token"])
    assert claims.identity == "operator:ann" and claims.attributes == {"aiobs.role": "operator"}, claims
    assert claims.video.room == ROOM and claims.video.can_publish_data and not claims.video.can_publish


def test_control_page_without_the_vendored_client_says_how_to_install_it(monkeypatch, tmp_path):
    """In process (no server): a missing livekit-client bundle is a 404 that names the set-up step."""
    from starlette.testclient import TestClient

    import bento.service as svc

    monkeypatch.setitem(svc.CONTROL_STATIC, "vendor/livekit-client.umd.js",
                        (tmp_path / "livekit-client.umd.js", "text/javascript"))
    client = TestClient(svc.control_app())
    r = client.get("/static/vendor/livekit-client.umd.js")
    assert r.status_code == 404 and "./dev.sh setup" in error_of(r.text)["error"]
    r = client.get("/")
    assert r.status_code == 200 and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert client.post("/").status_code == 405


def test_the_operator_watches_the_program_and_locks_a_camera(control_service):
    base, data, studio = control_service
    from playwright.sync_api import expect, sync_playwright

    t_start = time.monotonic()
    console: list[str] = []
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            # without the token: an auth prompt and no data; with a wrong one: the service's 401, still no data
            page = browser.new_context().new_page()
            page.goto(base + "/control/")
            expect(page.locator("#auth")).to_be_visible()
            expect(page.locator("#error")).to_contain_text("not signed in")
            assert page.locator(".card").count() == 0 and page.locator("#console").is_hidden()
            page.fill("#token", "wrong-" + TOKEN)
            page.click("#connect")
            expect(page.locator("#error")).to_contain_text("unauthorized (HTTP 401)")
            expect(page.locator("#auth")).to_be_visible()
            assert page.locator(".card").count() == 0 and page.locator("#console").is_hidden()
            assert page.evaluate("sessionStorage.getItem('aiobs.serviceToken')") is None, "a refused token is dropped"
            page.context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(base + "/control/")
            page.fill("#operator", "ann")
            page.fill("#token", TOKEN)
            page.click("#connect")
            assert TOKEN not in page.url

            # five cameras, each with a numeric score (the director is running: models loaded, ticks flowing)
            cards = page.locator("#grid .card")
            expect(cards).to_have_count(5, timeout=60_000)
            assert sorted(cards.evaluate_all("cs => cs.map(c => c.dataset.camera)")) == CAMERAS
            page.wait_for_function("""() => {
                const s = [...document.querySelectorAll('#grid .card .score')].map(e => e.textContent);
                return s.length === 5 && s.every(t => /^-?\\d+\\.\\d{3}$/.test(t)); }""", timeout=30_000)
            studio.check()
            assert all(c["in_tick"] for c in room_status(base, ROOM)["cameras"].values())  # scored: may be taken

            # the program plays: LiveKit video decoded in the page, its time advancing; the program sound attached
            page.wait_for_function("() => { const v = document.getElementById('program');"
                                   " return v.videoWidth > 0 && v.currentTime > 0; }", timeout=30_000)
            t1 = page.evaluate("document.getElementById('program').currentTime")
            page.wait_for_function("t => document.getElementById('program').currentTime > t + 0.5", arg=t1,
                                   timeout=10_000)  # (a function, not a string: the page's CSP allows no eval)
            assert page.evaluate("document.getElementById('program').videoWidth") == 320
            page.wait_for_function("() => { const a = document.getElementById('program-audio');"
                                   " return a.srcObject && a.srcObject.getAudioTracks().length > 0 && !a.paused; }",
                                   timeout=10_000)
            expect(page.locator("#lk")).to_contain_text(re.compile(r"connected as operator:ann-[0-9a-f]{6}-\d+$"))
            assert page.locator("#sound").is_hidden(), "the program sound plays (the Connect click allowed it)"

            # lock a camera that is not on air, from the page: the service reports it on program, override_lock
            s = room_status(base, ROOM)
            target = next(c for c in reversed(CAMERAS) if c != s["program"])
            card = page.locator(f'#grid .card[data-camera="{target}"]')
            expect(card).not_to_have_class(ON_AIR)
            lock = card.locator('button[data-action="lock"]')
            # (enabled once the page is in the room and the camera has a picture: a lock on a camera that has sent
            # no frame yet is rejected, and the page says so)
            expect(lock).to_be_enabled(timeout=30_000)
            lock.click()
            seen = []

            def locked():
                seen.append(room_status(base, ROOM))
                st = seen[-1]
                if st["program"] != target:
                    return False
                if {"to": target, "reason": "override_lock"} in [{"to": c["to"], "reason": c["reason"]}
                                                                  for c in st["recent_cuts"]]:
                    return True  # the lock cut to it
                # had the director cut to it on its own just before the packet arrived, the lock holds it instead:
                # override_lock for that tick, then "locked on <target>" (nothing else locks in this test)
                d = st["decision"] or {}
                return d.get("reason") == "override_lock" or (d.get("reason") == "locked" and target in d["detail"])

            try:
                poll(locked, 30, f"live_status shows {target} on program by override_lock", every=0.25)
            except pytest.fail.Exception:
                last = seen[-1] if seen else {}
                cams = {c: (v.get("score"), v.get("stale")) for c, v in last.get("cameras", {}).items()}
                pytest.fail(f"the lock on {target} never showed: program {last.get('program')!r}, decision "
                            f"{last.get('decision')}, recent cuts {last.get('recent_cuts')}, overrides "
                            f"{last.get('recent_overrides')}, health {last.get('health')}, cameras {cams}")
            st = seen[-1]
            # (at most one refusal: the director's LiveKit SDK can lose a sender for a moment; the page then says so
            # and sends again)
            assert st["health"]["overrides"] >= 1 and st["health"]["unauthorised_overrides"] <= 1, st["health"]
            # the page's tally follows, and its cut list says why
            expect(card).to_have_class(LOCKED, timeout=5_000)
            expect(page.locator("#on-air")).to_have_text(target)
            expect(page.locator("#cuts tbody tr").first).to_contain_text("override_lock")
            expect(page.locator("#sent")).to_contain_text(f"lock {target} by operator:ann obeyed")
            ov = st["recent_overrides"][-1]
            assert (ov["operator"], ov["action"], ov["camera"], ov["outcome"]) == ("operator:ann", "lock", target,
                                                                                   "obeyed"), st
            assert page.locator("#grid .card.program").count() == 1
            page.wait_for_timeout(1000)  # a second of program after the cut, for the picture
            page.screenshot(path="/tmp/aiobs-control-page.png", full_page=True)
            # and release: back to auto (the lock is gone)
            card.locator('button[data-action="release"]').click()
            poll(lambda: room_status(base, ROOM)["decision"]["reason"] != "locked", 10, "the lock is released")
        finally:
            browser.close()
    log = (data / "serve.log").read_text()
    assert re.search(r"operator token minted for 'operator:ann-[0-9a-f]{6}-\d+'", log), log[-3000:]
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console
    print(f"browser part: {time.monotonic() - t_start:.1f} s; console: {console}")
    code, r = post(base + "/live_stop", {"room": ROOM})
    assert code == 200 and r["report"]["overrides"] >= 2 and r["report"]["unauthorised_overrides"] == 0, r
