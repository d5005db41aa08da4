"""`aiobs token`: least-privilege LiveKit tokens per role, the role a participant cannot rewrite, and `role_of`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jwt
import pytest
from livekit import api

from runtime.settings import load_settings
from runtime.tokens import ROLE_ATTRIBUTE, ROLES, TokenError, director_token, mint, role_of

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "devkey", "secretsecretsecretsecretsecretsecret"
LK = {"AIOBS_LIVEKIT_API_KEY": KEY, "AIOBS_LIVEKIT_API_SECRET": SECRET, "AIOBS_LIVEKIT_ROOM": "studio"}

# role -> (can_publish, can_subscribe, can_publish_data)
EXPECTED = {"camera": (True, False, False), "viewer": (False, True, False), "operator": (False, True, True),
            "director": (True, True, True)}


def settings(**env):
    return load_settings(env={**LK, **env})


def test_every_role_gets_exactly_its_grants_and_cannot_promote_itself():
    assert set(ROLES) == set(EXPECTED)
    for role, (publish, subscribe, data) in EXPECTED.items():
        token = mint(settings(), role, f"{role}-1", ttl_s=600)
        claims = api.TokenVerifier(KEY, SECRET).verify(token)  # signature, issuer, expiry
        v = claims.video
        assert (v.can_publish, v.can_subscribe, v.can_publish_data) == (publish, subscribe, data), role
        assert v.room_join and v.room == "studio" and claims.identity == f"{role}-1"
        assert v.can_update_own_metadata is False
        assert not (v.room_admin or v.room_create or v.room_list or v.room_record or v.ingress_admin or v.hidden
                    or v.agent), role
        assert claims.attributes == {ROLE_ATTRIBUTE: role}
        assert json.loads(claims.metadata) == {"role": role}
        raw = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=KEY)  # what the server reads
        assert raw["video"]["canUpdateOwnMetadata"] is False and raw["attributes"][ROLE_ATTRIBUTE] == role
        assert 590 <= raw["exp"] - time.time() <= 610
        if publish:  # media sources are named: no screen share from a camera
            assert sorted(v.can_publish_sources) == ["camera", "microphone"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(mint(settings(), "viewer", "v"), "another-secret-another-secret-xx", algorithms=["HS256"])


def test_room_ttl_and_the_directors_own_token():
    claims = api.TokenVerifier(KEY, SECRET).verify(mint(settings(), "camera", "cam1", room="other", ttl_s=60))
    assert claims.video.room == "other"
    d = jwt.decode(director_token(settings(), "studio"), SECRET, algorithms=["HS256"], issuer=KEY)
    assert d["sub"] == "aiobs-director" and d["attributes"] == {ROLE_ATTRIBUTE: "director"}
    assert d["video"]["canPublish"] and d["video"]["canSubscribe"] and d["video"]["canPublishData"]


def test_bad_requests_are_clear():
    for kwargs, why in [(dict(role="admin", identity="x"), "unknown role"),
                        (dict(role="viewer", identity=""), "identity"),
                        (dict(role="viewer", identity="a\nb"), "control"),
                        (dict(role="viewer", identity="x" * 200), "at most"),
                        (dict(role="viewer", identity="x", ttl_s=0), "ttl"),
                        (dict(role="viewer", identity="x", ttl_s=float("nan")), "ttl")]:
        with pytest.raises(TokenError, match=why):
            mint(settings(), **kwargs)
    with pytest.raises(TokenError, match="AIOBS_LIVEKIT_API_KEY and AIOBS_LIVEKIT_API_SECRET"):
        mint(load_settings(env={}), "viewer", "x")


def test_role_of_reads_the_attribute_then_the_metadata():
    assert role_of(SimpleNamespace(attributes={ROLE_ATTRIBUTE: "operator"}, metadata="")) == "operator"
    assert role_of(SimpleNamespace(attributes={}, metadata='{"role": "viewer"}')) == "viewer"
    assert role_of(SimpleNamespace(attributes={ROLE_ATTRIBUTE: "camera"}, metadata='{"role": "operator"}')) == "camera"
    for p in [SimpleNamespace(attributes={}, metadata=""), SimpleNamespace(attributes=None, metadata="not json"),
              SimpleNamespace(attributes={ROLE_ATTRIBUTE: "root"}, metadata=""),
              SimpleNamespace(attributes={}, metadata='["operator"]'), object()]:
        assert role_of(p) == ""
    # what a minted token carries is what role_of reads
    claims = api.TokenVerifier(KEY, SECRET).verify(mint(settings(), "operator", "alice"))
    assert role_of(claims) == "operator"


def aiobs(*args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIOBS_")}
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**clean, **env}, cwd=ROOT)


def test_cli_prints_a_valid_token_and_fails_clearly_without_credentials():
    r = aiobs("token", "--role", "operator", "--identity", "alice", "--room", "R", "--ttl", "120", env=LK)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert "\n" not in token
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "alice" and claims.video.room == "R" and role_of(claims) == "operator"
    assert claims.video.can_publish_data and not claims.video.can_publish
    r = aiobs("token", "--role", "operator", "--identity", "alice", env={})
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip() == ("aiobs token: minting a LiveKit token needs AIOBS_LIVEKIT_API_KEY and "
                                "AIOBS_LIVEKIT_API_SECRET"), r.stderr


def test_a_real_server_enforces_the_roles(livekit_server):
    """The grants as livekit-server applies them: an operator's media and its attempt to rewrite its own role go
    nowhere, a viewer's data message reaches nobody while an operator's does, a camera publishes; everyone sees the
    others' roles."""
    import asyncio

    from livekit import rtc

    s = load_settings(env={}, livekit_api_key=livekit_server["api_key"],
                      livekit_api_secret=livekit_server["api_secret"], livekit_room="roles")

    async def attempt(coro, timeout=3.0):  # the SDK may raise, or wait for an answer the server never gives
        try:
            await asyncio.wait_for(coro, timeout)
        except Exception:
            pass

    async def main():
        rooms, received = {}, {"operator": [], "viewer": []}
        try:
            for role in ("camera", "operator", "viewer"):
                rooms[role] = rtc.Room()
                await rooms[role].connect(livekit_server["url"], mint(s, role, f"{role}-1"))
            for role in received:
                rooms[role].on("data_received", lambda pkt, role=role: received[role].append(pkt))
            await rooms["camera"].local_participant.publish_track(
                rtc.LocalVideoTrack.create_video_track("cam", rtc.VideoSource(64, 64)),
                rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
            op = rooms["operator"].local_participant
            await attempt(op.publish_track(rtc.LocalVideoTrack.create_video_track("op", rtc.VideoSource(64, 64)),
                                           rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)))
            await attempt(op.set_attributes({ROLE_ATTRIBUTE: "director"}))
            await attempt(op.set_metadata('{"role": "director"}'))
            await attempt(rooms["viewer"].local_participant.publish_data(b"{}", topic="aiobs.override"))
            await op.publish_data(b"{}", topic="aiobs.override")
            await asyncio.sleep(1.5)
            others = rooms["viewer"].remote_participants.values()
            assert {p.identity: role_of(p) for p in others} == {"camera-1": "camera", "operator-1": "operator"}
            assert {p.identity: len(p.track_publications) for p in others} == {"camera-1": 1, "operator-1": 0}
            assert len(received["viewer"]) == 1 and received["operator"] == []
        finally:
            for room in rooms.values():
                await room.disconnect()

    asyncio.run(asyncio.wait_for(main(), 60))
