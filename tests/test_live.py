"""Live mode against a real livekit-server on loopback: two camera participants publish video (and one speaks), the
director subscribes, decides, publishes the program track, and obeys an override sent as a data packet."""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
import pytest

from runtime.live import OVERRIDE_TOPIC, LiveDirector, LiveError
from runtime.media import SAMPLE_RATE, iter_frames
from runtime.models import sample_video
from runtime.settings import load_settings
from runtime.tts import PiperTTS, resample


def token(server, identity, room="studio"):
    from livekit import api

    return api.AccessToken(server["api_key"], server["api_secret"]).with_identity(identity) \
        .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt()


async def publish_camera(server, name, frames, speech=None, stop=None):
    from livekit import rtc

    room = rtc.Room()
    await room.connect(server["url"], token(server, name))
    src = rtc.VideoSource(640, 360)
    await room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track(name, src),
                                               rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
    audio = None
    if speech is not None:
        audio = rtc.AudioSource(SAMPLE_RATE, 1)
        await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track(name, audio),
                                                   rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    i, hop = 0, SAMPLE_RATE // 15
    while not stop.is_set():
        rgba = cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_RGB2RGBA)
        src.capture_frame(rtc.VideoFrame(640, 360, rtc.VideoBufferType.RGBA, rgba.tobytes()))
        if audio is not None:
            chunk = speech[(i * hop) % (speech.size - hop):][:hop]
            pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            await audio.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, hop))
        i += 1
        await asyncio.sleep(1 / 15)
    await room.disconnect()


async def watch_program(server, counts, stop, override_after=None):
    from livekit import rtc

    room = rtc.Room()
    got = asyncio.get_running_loop().create_future()

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        if publication.name == "program" and not got.done():
            got.set_result(track)

    await room.connect(server["url"], token(server, "viewer"))
    track = await asyncio.wait_for(got, 20)
    stream = rtc.VideoStream(track)
    sent = False
    async for ev in stream:
        counts.append((ev.frame.width, ev.frame.height))
        if override_after and len(counts) >= override_after and not sent:
            await room.local_participant.publish_data(json.dumps({"action": "lock", "camera": "wide",
                                                                  "operator": "ann"}), topic=OVERRIDE_TOPIC)
            sent = True
        if stop.is_set():
            break
    await stream.aclose()
    await room.disconnect()


def test_live_director_in_a_real_room(livekit_server, data_dir):
    tts = PiperTTS()
    speech = resample(tts.synthesize("Good evening and welcome to the studio. Tonight we talk about the final. "
                                     "The goalkeeper made the difference."), tts.sample_rate, SAMPLE_RATE)
    wide = [f for _, f in iter_frames(sample_video("bikes.mp4"), 25, (640, 360))][:100]
    host = [f for _, f in iter_frames(sample_video("carphone_pristine.mp4"), 25, (640, 360))]
    settings = load_settings(env={}, data_dir=data_dir, livekit_url=livekit_server["url"],
                             livekit_api_key=livekit_server["api_key"],
                             livekit_api_secret=livekit_server["api_secret"], livekit_room="studio",
                             yolo_model="yolo11n.yaml")  # the real yolo11n cost: this test runs 5 media streams
    from runtime.model_manager import ModelManager

    models = ModelManager(settings.mlflow_tracking_uri)  # an empty registry: the rule baseline directs
    models.refresh()
    director = LiveDirector(settings, models=models, program_size=(640, 360), program_fps=10)
    program: list = []

    async def scenario():
        stop = asyncio.Event()
        cams = [asyncio.ensure_future(publish_camera(livekit_server, "wide", wide, stop=stop)),
                asyncio.ensure_future(publish_camera(livekit_server, "host", host, speech=speech, stop=stop))]
        viewer = asyncio.ensure_future(watch_program(livekit_server, program, stop, override_after=110))
        report = await director.run(duration_s=16.0)
        stop.set()
        await asyncio.gather(*cams, viewer, return_exceptions=True)
        return report

    report = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert report.cameras == {"wide", "host"}
    assert report.ticks >= 20 and report.program_frames >= 100
    assert len(program) >= 60 and program[0] == (640, 360)  # the viewer receives the program
    assert report.cuts and report.cuts[0][2] == "start"
    assert any(to == "host" for _, to, _ in report.cuts)  # the speaker gets the program
    assert report.overrides == 1 and report.cuts[-1][1:] == ("wide", "override_lock")
    from features.shipper import SegmentShipper
    from features.store import FeatureStore

    from ranker.core import replay_logged

    with FeatureStore(settings.clickhouse_dsn) as store:  # everything it saw reaches the feature log
        assert SegmentShipper(settings.spool_dir, store).ship_once().error is None
        rows = store.frame("camera_ticks", sessions=[report.session_id])
        decisions = store.frame("decisions", sessions=[report.session_id])
        overrides = store.frame("overrides", sessions=[report.session_id])
    assert len(overrides) == 1 and overrides["operator"].iloc[0] == "ann"
    assert set(rows["camera_id"]) == {"wide", "host"} and set(rows["ab_variant"]) == {"baseline"}
    assert len(decisions) == report.ticks
    # replaying the logged rows through the director core reproduces the live session's cuts exactly
    replayed = replay_logged(rows, decisions, overrides)
    assert [(d.t, d.to_camera, d.reason) for d in replayed if d.cut] == report.cuts


def test_documented_ab_share_works_as_written(livekit_server, data_dir):
    """README: `AIOBS_CHALLENGER_SHARE=0.1 aiobs live` (the A/B share is a real setting)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "AIOBS_CHALLENGER_SHARE": "0.1", "AIOBS_DATA_DIR": str(data_dir),
           "AIOBS_LIVEKIT_URL": livekit_server["url"], "AIOBS_LIVEKIT_API_KEY": livekit_server["api_key"],
           "AIOBS_LIVEKIT_API_SECRET": livekit_server["api_secret"], "AIOBS_POLICY_MIN_HOLD_S": "3",
           "AIOBS_YOLO_MODEL": "yolo11n.yaml"}
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "live", "--room", "ab", "--duration", "2"], env=env,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "live: " in p.stdout


def test_live_mode_fails_clearly_without_a_server(data_dir):
    with pytest.raises(LiveError, match="AIOBS_LIVEKIT_URL"):
        LiveDirector(load_settings(env={}, data_dir=data_dir))
    settings = load_settings(env={}, data_dir=data_dir, livekit_url="ws://127.0.0.1:1", livekit_api_key="k",
                             livekit_api_secret="s" * 32)
    with pytest.raises(LiveError, match="cannot join LiveKit room"):
        asyncio.run(asyncio.wait_for(LiveDirector(settings).run(duration_s=1), 60))
