"""`bentoml serve` the director service and talk HTTP to it: ticks, overrides, malformed payloads, the spool, the
bearer token, request bounds, one error shape, the session clock, idle and LRU eviction; live rooms directed by the
service (a real livekit-server), their status, readiness and Prometheus series; a room that cannot join."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import secrets
import subprocess
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_urlsafe(24)
IDLE_S = 5.0  # the fixture's AIOBS_SERVICE_SESSION_IDLE_S
MAX_SESSIONS = 4  # the fixture's AIOBS_SERVICE_MAX_SESSIONS


def post(url: str, payload, token: str | None = TOKEN, headers: dict | None = None) -> tuple[int, dict | str]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
         **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def error_of(body) -> dict:
    """The one error shape every 4xx of the service has: {"error": str, "detail": [{"type", "loc", "msg"}, ...]}."""
    assert isinstance(body, str), body
    e = json.loads(body)
    assert isinstance(e, dict) and isinstance(e.get("error"), str) and e["error"], e
    assert isinstance(e.get("detail"), list) and e["detail"], e
    for d in e["detail"]:
        assert {"type", "loc", "msg"} <= set(d) and isinstance(d["loc"], list), e
    return e


def serve_env(data: Path, **settings: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOBS_")}
    return {**env, "AIOBS_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", **settings}


def bentoml_serve(env: dict, port: int, log) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "bentoml"
    return subprocess.Popen([str(exe), "serve", "bento.service:Director", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def started(data: Path, env: dict):
    """`bentoml serve` with env, once /readyz answers: (process, base url)."""
    port = free_port()
    log_path = data / "serve.log"  # a file, not a pipe nobody reads: the server never blocks on its own log
    with open(log_path, "w") as log:
        proc = bentoml_serve(env, port, log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"bentoml serve did not become ready: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc, base


def stopped(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("svc")
    # live mode points at a port nobody listens on: a room started here must fail, and say so
    env = serve_env(data, AIOBS_SERVICE_TOKEN=TOKEN, AIOBS_SERVICE_SESSION_IDLE_S=str(IDLE_S),
                    AIOBS_SERVICE_MAX_SESSIONS=str(MAX_SESSIONS), AIOBS_LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
                    AIOBS_LIVEKIT_API_KEY="devkey", AIOBS_LIVEKIT_API_SECRET="s" * 36,
                    AIOBS_YOLO_MODEL="yolo11n.yaml")
    proc, base = started(data, env)
    yield base, data
    stopped(proc)


def spooled(data: Path) -> bytes:
    """Every feature-log byte the service has written so far (open and sealed segments of every table)."""
    return b"".join(p.read_bytes() for p in (data / "spool").rglob("*") if p.is_file())


def cam(cid, speech=0.0, **extra):
    return {"camera_id": cid, "features": {"speech_prob": speech, "audio_rel_db": 0.0 if speech else -20.0, **extra}}


def test_ticks_are_scored_decided_and_logged(service):
    base, data = service
    code, r = post(base + "/tick", {"session_id": "s1", "t": 0.0, "cameras": [cam("a", 0.9), cam("b")]})
    assert code == 200, r
    assert r["variant"] == "baseline" and r["decision"]["program"] == "a" and r["decision"]["reason"] == "start"
    assert set(r["scores"]) == {"a", "b"} and r["scores"]["a"] > r["scores"]["b"]
    decisions = []
    for k in range(1, 25):  # b becomes the speaker
        code, r = post(base + "/tick", {"session_id": "s1", "t": k * 0.2, "cameras": [cam("a"), cam("b", 0.95)]})
        assert code == 200
        decisions.append(r["decision"])
    cut = next(d for d in decisions if d["cut"])
    assert cut["to"] == "b" and cut["reason"] == "delta" and cut["transition"] == "dissolve"
    code, r = post(base + "/tick", {"session_id": "s1", "t": 6.0, "cameras": [cam("a"), cam("b", 0.95)],
                                    "overrides": [{"action": "lock", "camera": "a", "operator": "ann"}]})
    assert code == 200 and r["decision"]["reason"] == "override_lock" and r["decision"]["program"] == "a"
    code, r = post(base + "/models_in_use", {})
    assert code == 200 and r["versions"] == {"champion": None, "challenger": None}
    time.sleep(2.5)  # segments rotate every 2 s
    post(base + "/tick", {"session_id": "s1", "t": 6.2, "cameras": [cam("a"), cam("b")]})
    segs = list((data / "spool" / "camera_ticks").glob("*.seg"))
    assert segs, "the service spools every row for the feature log"


def test_malformed_payloads_get_clear_4xx_errors(service):
    base, _ = service
    code, body = post(base + "/tick", {"session_id": "s2", "t": 0.0,
                                       "cameras": [{"camera_id": "a", "features": {"crowd_roar": 1.0}}]})
    assert code == 400 and "crowd_roar" in body
    code, body = post(base + "/tick", {"session_id": "s2", "t": 0.0, "cameras": [cam("a"), cam("a")]})
    assert code == 400 and "duplicate camera" in body
    code, body = post(base + "/tick", {"session_id": "s2", "cameras": [cam("a")]})  # no t
    assert code == 400 and error_of(body)["detail"][0] == {"type": "missing", "loc": ["t"], "msg": "Field required"}
    # a bad feature value is refused BEFORE the session's state moves: the next good tick is still its start
    for bad, why in [({"speech_prob": 1e39}, "not finite"), ({"people_count": 2.5}, "is a count"),
                     ({"speech_prob": "loud"}, "speech_prob")]:
        code, body = post(base + "/tick", {"session_id": "s3", "t": 0.0, "cameras": [cam("a", **bad), cam("b")]})
        assert code == 400 and why in body, body
    bad_timing = {**cam("a"), "quiet_at": float("nan")}
    code, body = post(base + "/tick", {"session_id": "s3", "t": 0.0, "cameras": [bad_timing, cam("b")]})
    assert code == 400 and "quiet_at" in body, body
    code, r = post(base + "/tick", {"session_id": "s3", "t": 0.2, "cameras": [cam("a", 0.9), cam("b")]})
    assert code == 200 and r["decision"]["reason"] == "start", r
    code, body = post(base + "/tick", {"session_id": "x" * 500, "t": 0.0, "cameras": [cam("a")]})
    assert code == 400 and "session_id" in body
    code, body = post(base + "/tick", {"session_id": "s4", "t": 0.0, "cameras": [cam(f"c{i}") for i in range(65)]})
    assert code == 400 and "cameras" in body
    code, body = post(base + "/tick", {"session_id": "s4", "t": 0.0, "cameras": [cam("a")],
                                       "overrides": [{"action": "lock", "camera": "a", "timeout_s": "abc"}]})
    assert code == 400 and "timeout_s" in body
    code, body = post(base + "/tick", {"session_id": "s2", "t": 0.0, "cameras": [cam("a")],
                                       "overrides": [{"action": "steal", "camera": "a"}]})
    assert code == 400 and "'take', 'lock' or 'release'" in body


def test_every_4xx_has_the_one_error_shape(service):
    base, _ = service
    ok = [cam("a")]
    cases = [
        ({"session_id": "s5", "t": 0.0, "cameras": [cam(f"c{i}") for i in range(65)]}, ["cameras"]),
        ({"session_id": "s5", "t": 0.0, "cameras": [cam("c" * 129)]}, ["cameras", 0, "camera_id"]),
        ({"session_id": "s\n5", "t": 0.0, "cameras": ok}, ["session_id"]),  # control characters, anywhere
        ({"session_id": "s5", "t": 0.0, "cameras": [cam("a\x1b[31m")]}, ["cameras", 0, "camera_id"]),
        ({"session_id": "s5", "t": 0.0, "cameras": ok,
          "overrides": [{"action": "release", "operator": "ann\u202e"}]}, ["overrides", 0, "operator"]),
        ({"session_id": "s5", "t": 0.0,  # more features than the contract has: refused before any name is looked at
          "cameras": [{"camera_id": "a", "features": {f"f{i}": 0.0 for i in range(200)}}]}, ["cameras", 0, "features"]),
        ({"session_id": "s5", "t": 0.0, "cameras": [{"camera_id": "a", "features": {"crowd_roar": 1.0}}]},
         ["cameras", 0]),  # an unknown feature name
        ({"session_id": "s5", "t": 0.0, "cameras": ok, "overides": []}, ["overides"]),  # a misspelt field
        ({"session_id": "s5", "t": "0.0", "cameras": ok}, ["t"]),  # a number is a JSON number
        ({"session_id": "s5", "t": 0.0, "cameras": [{**cam("a"), "speaking": "yes"}]}, ["cameras", 0, "speaking"]),
        ({"session_id": "s5", "t": 2e9, "cameras": ok}, ["t"]),
        (["not", "an", "object"], []),
    ]
    for payload, loc in cases:
        code, body = post(base + "/tick", payload)
        assert code == 400, (payload, body)
        e = error_of(body)
        assert e["detail"][0]["loc"] == loc, (loc, e)
        assert len(body) < 4000, "an error never echoes a large input back"
    code, body = post(base + "/tick", b'{"session_id": "s5", "t": 0.0, "cam')  # not JSON at all: bentoml's parser
    assert code == 400 and error_of(body)["detail"][0]["type"] == "json_invalid", body
    code, body = post(base + "/tick", {"session_id": "s5", "t": 0.0, "cameras": ok, "pad": "x" * 1000})
    assert code == 400 and error_of(body)["detail"][0]["loc"] == ["pad"]
    # a body over service_max_body_bytes (1 MiB) is refused on its Content-Length, before a byte of it is read
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/tick")
    for k, v in {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                 "Content-Length": str((1 << 20) + 1)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and "too large" in error_of(resp.read().decode())["error"]
    conn.close()
    code, body = post(base + "/tick", b"session_id=s5", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415 and error_of(body)
    code, r = post(base + "/tick", {"session_id": "s5", "t": 0.0, "cameras": ok})
    assert code == 200 and r["decision"]["reason"] == "start", "none of the refused ticks started the session"


def test_only_token_holders_direct_and_a_refused_call_moves_nothing(service):
    base, data = service
    tick = {"session_id": "auth-1", "t": 5.0, "cameras": [cam("a", 0.9), cam("b")],
            "overrides": [{"action": "lock", "camera": "a", "operator": "mallory"}]}
    for token, headers in [(None, {}), ("wrong-" + TOKEN, {}), (TOKEN[:-1], {}),
                           (None, {"Authorization": f"Basic {TOKEN}"}), (None, {"Authorization": TOKEN})]:
        code, body = post(base + "/tick", tick, token=token, headers=headers)
        assert code == 401 and error_of(body)["detail"][0]["loc"] == ["header", "authorization"], body
        assert TOKEN not in body
    code, body = post(base + "/tick//", tick, token=None)  # another spelling of the path is the same API
    assert code in (401, 404), (code, body)
    code, r = post(base + "/models_in_use", {}, token=None)  # read-only: open
    assert code == 200 and "versions" in r
    assert b'"auth-1"' not in spooled(data) and b"mallory" not in spooled(data), "a refused tick logged nothing"
    # and moved no state: t=0 after the refused t=5 is no step back, and it is the session's start
    code, r = post(base + "/tick", {**tick, "t": 0.0, "overrides": []})
    assert code == 200 and r["decision"]["reason"] == "start", r
    assert b'"auth-1"' in spooled(data)


def test_bad_values_and_a_backward_clock_are_refused_and_leave_the_session_as_it_was(service):
    base, _ = service

    def seq(k):  # a (k < 4) then b (k >= 4) speaks: the session cuts once the policy allows
        return [cam("a", 0.9 if k < 4 else 0.0), cam("b", 0.95 if k >= 4 else 0.0)]

    bad_ticks = [  # each arrives between two good ticks of session "clean"; "control" never sees them
        lambda k: {"t": k * 0.5, "cameras": [cam("a", float("nan")), cam("b")]},  # NaN feature
        lambda k: {"t": k * 0.5, "cameras": [cam("a", float("inf")), cam("b")]},
        lambda k: {"t": float("nan"), "cameras": seq(k)},
        lambda k: {"t": float("inf"), "cameras": seq(k)},
        lambda k: {"t": (k - 2) * 0.5, "cameras": seq(k)},  # the clock going back
        lambda k: {"t": k * 0.5, "cameras": [{**cam("a"), "quiet_at": float("nan")}, cam("b")]},
        lambda k: {"t": k * 0.5, "cameras": seq(k), "overrides": [{"action": "take", "camera": "b",
                                                                    "timeout_s": float("nan")}]},
        lambda k: {"t": k * 0.5, "cameras": [cam("a", True), cam("b")]},  # wrongly typed
    ]
    clean, control = [], []
    for k in range(16):
        if k >= 2 and k - 2 < len(bad_ticks):
            code, body = post(base + "/tick", {"session_id": "clean", **bad_ticks[k - 2](k)})
            assert code == 400, (k, body)
            e = error_of(body)
            if k - 2 == 4:
                assert e["detail"][0]["type"] == "clock_backwards" and e["detail"][0]["loc"] == ["t"], e
        for sid, out in (("clean", clean), ("control", control)):
            code, r = post(base + "/tick", {"session_id": sid, "t": k * 0.5, "cameras": seq(k)})
            assert code == 200, r
            out.append((r["scores"], r["decision"]))
    assert clean == control
    assert any(d["cut"] and d["to"] == "b" for _, d in clean)


def test_idle_sessions_are_evicted_then_the_least_recently_ticked(service):
    base, data = service

    def tick(sid, t):
        code, r = post(base + "/tick", {"session_id": sid, "t": t, "cameras": [cam("a", 0.9), cam("b")]})
        assert code == 200, r
        return r["decision"]["reason"]

    assert tick("idle-a", 0.0) == "start" and tick("idle-a", 1.0) != "start"
    time.sleep(IDLE_S + 0.5)
    assert tick("idle-b", 0.0) == "start"  # any tick sweeps the idle sessions out
    assert tick("idle-a", 0.5) == "start", "evicted: its state (and its clock) are gone"
    log = (data / "serve.log").read_text()
    assert "evicted session 'idle-a': idle" in log, log[-2000:]  # every eviction is logged
    # now idle-b, idle-a live; fill up to MAX_SESSIONS, touch idle-b, and one more session evicts idle-a
    assert tick("lru-1", 0.0) == "start" and tick("lru-2", 0.0) == "start"
    assert tick("idle-b", 0.2) != "start"
    assert tick("lru-3", 0.0) == "start"
    assert tick("idle-b", 0.4) != "start", "the recently ticked session survives"
    assert tick("idle-a", 0.6) == "start", "the session idle longest was evicted"
    evictions = [ln for ln in (data / "serve.log").read_text().splitlines() if "evicted session 'idle-a'" in ln]
    assert any("service_session_idle_s" in ln for ln in evictions), evictions
    assert any("service_max_sessions" in ln for ln in evictions), evictions


def test_the_service_refuses_to_start_without_a_proper_token(tmp_path):
    for settings, why in [({}, "AIOBS_SERVICE_TOKEN"), ({"AIOBS_SERVICE_TOKEN": "short"}, "at least 16")]:
        log_path = tmp_path / "serve.log"
        with open(log_path, "w") as log:
            proc = bentoml_serve(serve_env(tmp_path, **settings), free_port(), log)
        try:
            rc = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("bentoml serve started without a service token")
        out = log_path.read_text()
        assert rc != 0 and "refuses to start" in out and why in out, out[-2000:]


def test_auth_settings():
    from bento.service import auth_problem
    from runtime.settings import load_settings

    assert "AIOBS_SERVICE_TOKEN" in auth_problem(load_settings(env={}))
    assert auth_problem(load_settings(env={"AIOBS_SERVICE_ALLOW_ANONYMOUS": "true"})) == ""
    assert auth_problem(load_settings(env={"AIOBS_SERVICE_TOKEN": "x" * 15}))
    assert auth_problem(load_settings(env={"AIOBS_SERVICE_TOKEN": "x" * 15 + " y"}))
    assert auth_problem(load_settings(env={"AIOBS_SERVICE_TOKEN": TOKEN})) == ""
    assert TOKEN not in repr(load_settings(env={"AIOBS_SERVICE_TOKEN": TOKEN}))


def test_the_guard_in_process_anonymous_only_when_allowed():
    """ServiceGuard without a server: anonymous mode lets /tick through only when explicitly allowed; a guard with
    no token that is not allowed refuses everything (fails closed); an empty bearer never matches."""
    from starlette.testclient import TestClient

    from bento.service import ServiceGuard
    from runtime.settings import load_settings

    async def app(scope, receive, send):  # stands in for the bentoml app: echoes the body it was handed
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    def client(**env):
        return TestClient(ServiceGuard(app, frozenset({"/tick"}), load_settings(env=env)))

    anonymous = client(AIOBS_SERVICE_ALLOW_ANONYMOUS="true")
    assert anonymous.post("/tick", content=b'{"a": 1}').content == b'{"a": 1}'
    closed = client()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}):
        r = closed.post("/tick", content=b"{}", headers=headers)
        assert r.status_code == 401 and error_of(r.text)
    assert closed.post("/models_in_use", content=b"{}").status_code == 200  # not guarded
    guarded = client(AIOBS_SERVICE_TOKEN=TOKEN, AIOBS_SERVICE_MAX_BODY_BYTES="2048")
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.post("/tick", content=b"[1]", headers=ok).content == b"[1]"
    assert guarded.post("/tick", content=b"[1]", headers={"Authorization": "Bearer "}).status_code == 401
    r = guarded.post("/tick", content=iter([b"[" + b" " * 1500, b" " * 1500 + b"]"]), headers=ok)  # chunked
    assert r.status_code == 413 and error_of(r.text)
    r = guarded.post("/tick", content=b"{'not': json}", headers=ok)
    assert r.status_code == 400 and error_of(r.text)["detail"][0]["type"] == "json_invalid"


# -- live rooms -------------------------------------------------------------------------------------------------------
LIVE_ROOM = "svc-live"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def poll(fn, timeout: float, what: str, every: float = 0.5):
    """fn() until it returns something truthy; fails with the last value after timeout seconds."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not after {timeout:g} s (last: {str(last)[:1500]})")  # noqa


def room_status(base: str, room: str) -> dict:
    code, r = post(base + "/live_status", {"room": room})
    assert code == 200, r
    return r


class Camera:
    """A camera participant publishing a moving test picture from its own thread and event loop (the test talks
    plain HTTP to the service meanwhile)."""

    def __init__(self, server: dict, name: str, room: str):
        import numpy as np

        frames = []
        for k in range(30):  # a bright square moving over a gradient: real pixels, real motion
            img = np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (360, 1, 3))
            img[100:200, 20 * k:20 * k + 100] = (255, 200, 40)
            frames.append(img)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(server, name, room, frames), daemon=True)
        self.thread.start()

    def _run(self, server, name, room, frames):
        try:
            self.loop.run_until_complete(self._publish(server, name, room, frames))
        except BaseException as e:  # noqa: BLE001 - reported by close()
            self.error = e

    async def _publish(self, server, name, room_name, frames):
        import cv2
        from livekit import api, rtc

        token = api.AccessToken(server["api_key"], server["api_secret"]).with_identity(name) \
            .with_grants(api.VideoGrants(room_join=True, room=room_name)).to_jwt()
        room = rtc.Room()
        await room.connect(server["url"], token)
        src = rtc.VideoSource(640, 360)
        await room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track(name, src),
                                                   rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        i = 0
        while not self.stop.is_set():
            rgba = cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_RGB2RGBA)
            src.capture_frame(rtc.VideoFrame(640, 360, rtc.VideoBufferType.RGBA, rgba.tobytes()))
            i += 1
            await asyncio.sleep(1 / 15)
        await room.disconnect()

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)
        assert self.error is None, repr(self.error)


@pytest.fixture(scope="module")
def live_service(tmp_path_factory, livekit_server):
    data = tmp_path_factory.mktemp("svc-live")
    env = serve_env(data, AIOBS_SERVICE_TOKEN=TOKEN, AIOBS_SERVICE_MAX_ROOMS="1",
                    AIOBS_LIVEKIT_URL=livekit_server["url"], AIOBS_LIVEKIT_API_KEY=livekit_server["api_key"],
                    AIOBS_LIVEKIT_API_SECRET=livekit_server["api_secret"],
                    AIOBS_YOLO_MODEL="yolo11n.yaml")  # the real architecture's cost, no weights to load
    proc, base = started(data, env)
    yield base, data, proc
    stopped(proc)


def test_the_service_directs_a_live_room(live_service, livekit_server):
    base, data, proc = live_service
    start = {"room": LIVE_ROOM, "policy": {"min_hold_s": 1.0}, "program_size": [320, 180], "program_fps": 10,
             "narrate": True}
    code, body = post(base + "/live_start", start, token=None)  # operators only
    assert code == 401 and error_of(body)["detail"][0]["loc"] == ["header", "authorization"]
    camera = Camera(livekit_server, "cam1", LIVE_ROOM)
    try:
        code, r = post(base + "/live_start", start)
        assert code == 200 and r["state"] == "starting" and r["room"] == LIVE_ROOM, r
        code, body = post(base + "/live_start", start)  # one director per room
        assert code == 409 and error_of(body)["detail"][0]["type"] == "room_running", body
        code, body = post(base + "/live_start", {**start, "room": "another"})  # AIOBS_SERVICE_MAX_ROOMS=1
        assert code == 429 and error_of(body)["detail"][0]["type"] == "too_many_rooms", body
        code, r = post(base + "/live_status", {})  # not ready until the room is on air, and it says why
        assert code == 200 and r["ready"] is False and LIVE_ROOM in r["not_ready"][0], r
        assert get(base + "/readyz")[0] == 503

        seen = []

        def on_air():
            seen.append(room_status(base, LIVE_ROOM))
            s = seen[-1]
            return s.get("program") == "cam1" and s["recent_cuts"] and s["link"] == "connected"

        try:
            poll(on_air, 60, "the service's director puts the camera on program")
        except BaseException:
            print(seen[-3:], (data / "serve.log").read_text()[-5000:])
            raise
        s = seen[-1]
        assert s["state"] == "running" and s["error"] is None and s["variant"] == "baseline", s
        assert s["health"]["ticks"] > 0 and s["recent_cuts"][0] == {"t": s["recent_cuts"][0]["t"], "to": "cam1",
                                                                    "reason": "start"}, s
        assert "speech_prob" in s["cameras"]["cam1"]["features"], s
        assert s["program_size"] == [320, 180] and s["policy"] == {"min_hold_s": 1.0} and s["narrate"] is True
        poll(lambda: get(base + "/readyz")[0] == 200, 10, "ready once the room is on air")
        code, metrics = get(base + "/metrics")  # the director's own series, through bentoml's multiprocess registry
        assert code == 200
        for series in (r'aiobs_director_ticks_total\{[^}]*room="svc-live"', r'aiobs_director_cuts_total\{[^}]*'
                       r'reason="start"[^}]*room="svc-live"|aiobs_director_cuts_total\{[^}]*room="svc-live"[^}]*'
                       r'reason="start"', r'aiobs_live_connected\{room="svc-live"\} 1\.0',
                       r'aiobs_live_tick_seconds_count\{[^}]*room="svc-live"', r'aiobs_live_program_frames_total\{',
                       r'aiobs_live_program_frame_out_seconds_count\{[^}]*room="svc-live"',
                       r'aiobs_analysis_stage_seconds_count\{', r'aiobs_director_model_info\{[^}]*room="svc-live"'):
            assert re.search(series, metrics), (series, [ln for ln in metrics.splitlines() if "aiobs" in ln][:40])
        code, r = post(base + "/live_stop", {"room": LIVE_ROOM})
        assert code == 200 and r["state"] == "stopped", r
        rep = r["report"]
        assert rep["ticks"] > 0 and rep["cameras"] == ["cam1"] and rep["program_frames"] > 0, rep
        assert rep["narration_audio_s"] > 0 and rep["narration_lines"] == 0, rep  # its track ran; nothing to say
        assert rep["recent_cuts"][0] == {"t": rep["recent_cuts"][0]["t"], "to": "cam1", "reason": "start"}, rep
        spool = r["spool_dir"]  # the room's own feature-log spool (one writer per spool directory)
        assert Path(spool).parent == data / "spool" / "rooms" and any((Path(spool) / "camera_ticks").iterdir())
        code, body = post(base + "/live_status", {"room": LIVE_ROOM})  # forgotten once stopped
        assert code == 404 and error_of(body)["detail"][0]["type"] == "not_found"
        assert get(base + "/readyz")[0] == 200
        # a room still directed when the service shuts down is stopped cleanly (its report is logged)
        code, r = post(base + "/live_start", {"room": LIVE_ROOM, "program_size": [320, 180], "program_fps": 10})
        assert code == 200, r
        poll(lambda: room_status(base, LIVE_ROOM)["link"] == "connected", 30, "the room restarts")
        assert stopped(proc) == 0
        log = (data / "serve.log").read_text()
        assert "stopping 1 live room(s)" in log and f"room '{LIVE_ROOM}' stopped at shutdown" in log, log[-3000:]
    finally:
        camera.close()


def test_a_room_that_cannot_join_fails_visibly_and_is_cleared_by_stop(service):
    """The service's LiveKit URL is a port nobody listens on: the director task dies with LiveError; its status
    says failed and why, the log has it, readiness drops until live_stop clears the room."""
    base, data = service
    for bad, loc in [({"room": "x", "policy": {"min_hold_z": 1}}, ["policy"]),
                     ({"room": "x", "policy": {"min_hold_s": -1}}, ["policy"]),
                     ({"room": "x", "program_size": [641, 360]}, ["program_size"]),
                     ({"room": "x", "program_delay_s": 11}, ["program_delay_s"]),
                     ({"room": "x\n"}, ["room"]), ({"rooms": "x"}, ["room"])]:
        code, body = post(base + "/live_start", bad)
        assert code == 400 and error_of(body)["detail"][0]["loc"] == loc, (bad, body)
    code, body = post(base + "/live_status", {"room": "dead"}, token=None)  # status is operator information
    assert code == 401 and error_of(body)
    code, body = post(base + "/live_status", {"room": "nobody"})
    assert code == 404 and error_of(body)["detail"][0]["loc"] == ["room"]
    code, body = post(base + "/live_stop", {"room": "nobody"})
    assert code == 404 and error_of(body)
    code, r = post(base + "/live_start", {"room": "dead"})
    assert code == 200 and r["state"] == "starting", r
    s = poll(lambda: (lambda s: s if s["state"] == "failed" else None)(room_status(base, "dead")), 60,
             "a room that cannot join fails")
    assert "cannot join LiveKit room 'dead'" in s["error"], s
    code, r = post(base + "/live_status", {})
    assert r["ready"] is False and "room 'dead' failed: cannot join" in r["not_ready"][0], r
    assert get(base + "/readyz")[0] == 503
    assert "room 'dead' failed: cannot join LiveKit room" in (data / "serve.log").read_text()
    code, r = post(base + "/live_stop", {"room": "dead"})  # the operator acknowledges: the room is cleared
    assert code == 200 and r["state"] == "failed" and "cannot join" in r["error"], r
    assert get(base + "/readyz")[0] == 200
    code, body = post(base + "/live_status", {"room": "dead"})
    assert code == 404


def test_the_director_series_are_on_the_service_metrics(service):
    base, _ = service
    code, r = post(base + "/tick", {"session_id": "metrics-1", "t": 0.0, "cameras": [cam("a", 0.9), cam("b")]})
    assert code == 200, r
    code, metrics = get(base + "/metrics")
    assert code == 200
    assert re.search(r'aiobs_director_ticks_total\{[^}]*room="service"[^}]*\} [1-9]', metrics), \
        [ln for ln in metrics.splitlines() if "aiobs" in ln][:40]
    assert re.search(r'aiobs_director_cuts_total\{[^}]*reason="start"', metrics)
