"""Live mode: direct a LiveKit room. The director joins as a hidden participant, subscribes to every camera
(video + audio), runs the same analysis -> features -> ranker -> policy core as `aiobs direct` on a tick clock, and
publishes the composited program as the `program` video track. Human overrides arrive as data packets on the topic
`aiobs.override` ({"action": "take"|"lock"|"release", "camera": "...", "timeout_s": 30, "operator": "..."}).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from features.extract import scene_matrix
from features.schema import CAMERA_TICKS, DECISIONS, OVERRIDES
from features.spool import FeatureLog
from ranker.core import CameraTick, DirectorCore, TickResult
from ranker.policy import Override, PolicyConfig

from .analysis.engine import AnalysisEngine
from .compositor import Compositor, CompositorConfig
from .media import SAMPLE_RATE

log = logging.getLogger(__name__)

OVERRIDE_TOPIC = "aiobs.override"
ANALYSIS_SIZE = (640, 360)


class LiveError(RuntimeError):
    """Live mode cannot start (not configured, server unreachable, bad credentials); the message says why."""


def director_token(settings, room: str, identity: str = "aiobs-director") -> str:
    from livekit import api

    if not (settings.livekit_api_key and settings.livekit_api_secret):
        raise LiveError("live mode needs AIOBS_LIVEKIT_API_KEY and AIOBS_LIVEKIT_API_SECRET")
    # not hidden: a hidden participant's tracks are not announced, and the room must see the program track
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True, can_publish_data=True)
    return api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret).with_identity(identity) \
        .with_name("AI-OBS director").with_grants(grants).to_jwt()


@dataclass
class LiveReport:
    session_id: str
    ticks: int = 0
    cameras: set[str] = field(default_factory=set)
    cuts: list[tuple[float, str, str]] = field(default_factory=list)  # (t, to, reason)
    overrides: int = 0
    rejected_overrides: int = 0
    failed_ticks: int = 0
    missed_ticks: int = 0  # ticks skipped because the one before ran late
    program_frames: int = 0


class LiveDirector:
    def __init__(self, settings, room: str | None = None, *, ranker=None, models=None,
                 policy: PolicyConfig | None = None, program_size: tuple[int, int] = (1280, 720),
                 program_fps: int = 25, session_id: str | None = None):
        """`models` (a runtime.model_manager.ModelManager) picks the ranker per session (champion / A/B challenger /
        baseline) and hot-swaps it between ticks; otherwise `ranker`, or the rule baseline."""
        if not settings.livekit_url:
            raise LiveError("live mode needs AIOBS_LIVEKIT_URL (ws://host:7880)")
        self.settings = settings
        self.room_name = room or settings.livekit_room
        self.rankers = models if models is not None else ranker  # None = the rule baseline
        self.hz = settings.tick_hz
        self.policy = policy or settings.policy
        self.program_size = program_size
        self.program_fps = program_fps
        self.report = LiveReport(session_id or f"live-{time.strftime('%Y%m%d-%H%M%S')}")
        # Threads: the event loop owns the media readers, the compositor, `latest`, the pending overrides and the
        # report; the executor thread owns the director core and the feature log (one tick at a time). The analysis
        # engine is the hand-over point: submit_* (loop) and tick() (executor) are safe to call concurrently.
        self.engine = AnalysisEngine.from_settings([], settings)
        self.compositor = Compositor(CompositorConfig(size=program_size, fps=program_fps))
        self.latest: dict[str, np.ndarray] = {}  # newest full frame per camera, for the program
        self._pending_overrides: list[Override] = []
        self._t0 = 0.0
        self._tasks: list[asyncio.Task] = []

    def now(self) -> float:
        return time.monotonic() - self._t0

    # -- media in --------------------------------------------------------------------------------------------------
    async def _read_video(self, track, cam: str) -> None:
        from livekit import rtc

        stream = rtc.VideoStream(track)
        try:
            async for ev in stream:
                f = ev.frame.convert(rtc.VideoBufferType.RGB24)
                rgb = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 3)
                self.latest[cam] = rgb
                small = rgb if (f.width, f.height) == ANALYSIS_SIZE else cv2.resize(rgb, ANALYSIS_SIZE)
                self.engine.submit_frame(cam, self.now(), small)
        finally:
            await stream.aclose()

    async def _read_audio(self, track, cam: str) -> None:
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32768.0
                self.engine.submit_audio(cam, self.now() - pcm.size / SAMPLE_RATE, pcm)
        finally:
            await stream.aclose()

    def _on_track(self, track, publication, participant) -> None:
        from livekit import rtc

        cam = publication.name or participant.identity
        if cam == "program":
            return
        self.engine.add_camera(cam)
        self.report.cameras.add(cam)
        reader = self._read_video if track.kind == rtc.TrackKind.KIND_VIDEO else self._read_audio
        self._tasks.append(asyncio.ensure_future(reader(track, cam)))
        log.info("live: subscribed to %s (%s)", cam, "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio")

    def _on_data(self, packet) -> None:
        if getattr(packet, "topic", "") != OVERRIDE_TOPIC:
            return
        who = getattr(getattr(packet, "participant", None), "identity", "?")
        try:
            msg = json.loads(bytes(packet.data).decode())
            if not isinstance(msg, dict):
                raise ValueError("an override packet is a JSON object")
            ov = Override.from_message(msg)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            log.warning("live: rejected an override packet from %s: %s", who, e)
            self.report.rejected_overrides += 1
            return
        self._pending_overrides.append(ov)

    # -- the tick and the program ----------------------------------------------------------------------------------
    def _tick(self, core: DirectorCore, flog: FeatureLog, t: float, overrides: list[Override]) -> TickResult | None:
        """Executor thread: analysis -> the director core (scores, policy, rows)."""
        obs = self.engine.tick(t)
        if not obs:
            return None
        ordered = list(obs.values())
        x = scene_matrix(ordered)
        r = core.tick(t, [CameraTick.from_observation(o, row) for o, row in zip(ordered, x)], overrides)
        flog.maybe_rotate()
        return r

    async def _ticks(self, flog: FeatureLog, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        core = DirectorCore(self.report.session_id, policy=self.policy, tick_s=1.0 / self.hz, rankers=self.rankers,
                            variant="live", room=self.room_name, sink=flog)
        k = 0
        while not stop.is_set():
            start = self.now()
            ovs, self._pending_overrides = self._pending_overrides, []
            try:  # analysis never blocks the media loop
                r = await loop.run_in_executor(None, self._tick, core, flog, start, ovs)
            except Exception:  # noqa: BLE001 - one bad tick must not end directing: log it, go on
                log.exception("live: tick %d failed; directing goes on", k)
                self.report.failed_ticks += 1
                r = None
            if r is None:
                self._pending_overrides[:0] = ovs  # no camera yet: the overrides wait for the next tick
            else:
                d = r.decision
                if d.cut:  # the compositor belongs to the loop
                    self.compositor.cut_to(d.to_camera, d.cut_time, d.transition)
                    self.report.cuts.append((r.t, d.to_camera, d.reason))
                self.report.overrides += len(r.overrides)
                self.report.ticks += 1
            k += 1
            behind = int(self.now() * self.hz) - k
            if behind > 0:  # a slow tick never makes up for lost time in a burst: skip to the present
                self.report.missed_ticks += behind
                k += behind
                log.warning("live: %d tick(s) skipped: a tick took %.2f s", behind, self.now() - start)
            await asyncio.sleep(max(0.0, k / self.hz - self.now()))

    async def _program(self, source, stop: asyncio.Event) -> None:
        from livekit import rtc

        w, h = self.program_size
        i = 0
        while not stop.is_set():
            frame = self.compositor.compose(self.now(), self.latest)
            rgba = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
            source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, rgba.tobytes()))
            self.report.program_frames += 1
            i += 1
            await asyncio.sleep(max(0.0, i / self.program_fps - self.now()))

    # -- run -------------------------------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None, stop: asyncio.Event | None = None) -> LiveReport:
        from livekit import rtc

        stop = stop or asyncio.Event()
        room = rtc.Room()
        room.on("track_subscribed", self._on_track)
        room.on("data_received", self._on_data)
        try:
            await room.connect(self.settings.livekit_url, director_token(self.settings, self.room_name))
        except Exception as e:  # noqa: BLE001 - unreachable server, bad key: say so, do not crash with a trace
            raise LiveError(f"cannot join LiveKit room {self.room_name!r} at {self.settings.livekit_url}: {e}") \
                from e
        source = rtc.VideoSource(*self.program_size)
        track = rtc.LocalVideoTrack.create_video_track("program", source)
        await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        self._t0 = time.monotonic()
        with FeatureLog(self.settings.spool_dir, [CAMERA_TICKS, DECISIONS, OVERRIDES]) as flog:
            workers = [asyncio.ensure_future(self._ticks(flog, stop)),
                       asyncio.ensure_future(self._program(source, stop))]
            try:
                if duration_s is not None:
                    try:
                        await asyncio.wait_for(stop.wait(), duration_s)
                    except asyncio.TimeoutError:
                        pass
                else:
                    await stop.wait()
            finally:
                stop.set()  # a tick in flight finishes and is applied: the log and the program agree
                await asyncio.wait(workers, timeout=10)
                for task in workers + self._tasks:
                    task.cancel()
                await asyncio.gather(*workers, *self._tasks, return_exceptions=True)
                await room.disconnect()
                self.engine.close()
        return self.report
