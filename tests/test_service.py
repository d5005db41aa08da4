"""`bentoml serve` the director service and talk HTTP to it: ticks, overrides, malformed payloads, the spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def post(url: str, payload: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("svc")
    port = free_port()
    env = {**os.environ, "AIOBS_DATA_DIR": str(data), "BENTOML_HOME": str(data / "bentoml"),
           "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    exe = Path(sys.executable).parent / "bentoml"
    proc = subprocess.Popen([str(exe), "serve", "bento.service:Director", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
            pytest.fail(f"bentoml serve did not become ready: {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    yield base, data
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
    assert code == 400 and '"loc":["t"]' in body and "Field required" in body
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
    assert 400 <= code < 500 and "'take', 'lock' or 'release'" in body
