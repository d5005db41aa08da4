"""Live mode: direct a LiveKit room. The director joins the room, subscribes to every camera (video + audio), runs
the same director core as `aiobs direct` on a tick clock, and publishes the composited program: the `program` video
track and, unless `program_audio` is off, the `program` audio track (the program camera's mic, or a mix). With
`narrate`, the narrator (runtime/narration/) speaks into the pauses on its own `narration` audio track, and into the
program sound (ducked under it) unless `narration_in_program` is off.

The program airs `program_delay_s` after the cameras (the broadcast delay; 0 = none). Received frames and sound wait
in per-camera delay lines; the director decides on the analysis timeline, and with a delay its cuts are placed at the
best word boundary inside it (the core's lookahead is the delay), exactly as `aiobs direct` places them on files.
Picture and sound leave the delay lines on one clock, so they stay in sync.

Human overrides arrive as data packets on the topic `aiobs.override` ({"action": "take"|"lock"|"release", "camera":
"...", "timeout_s": 30, "operator": "..."}); only participants whose token grants the operator role (`aiobs token
--role operator`) are obeyed, and every field is validated before it reaches the policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from features.extract import scene_matrix
from features.schema import TABLES
from features.spool import FeatureLog
from ranker.core import CameraTick, DirectorCore, TickResult
from ranker.policy import Override, PolicyConfig

from .analysis.engine import AnalysisEngine
from .compositor import Compositor, CompositorConfig
from . import metrics
from .program import (AUDIO_CHUNK, AUDIO_FADE, AUDIO_MARGIN_S, AUDIO_QUEUE_MS, PROGRAM_AUDIO_RATE, ArrivalClock,
                      AudioRing, FrameRing, ProgramClock, audio_resume, program_bitrate, sound_ready)
from .media import SAMPLE_RATE
from .tokens import role_of

log = logging.getLogger(__name__)

OVERRIDE_TOPIC = "aiobs.override"
ANALYSIS_SIZE = (640, 360)
LAYER_HOLD_S = 2.0  # the camera next in line keeps the best simulcast layer at least this long
LAYER_MARGIN = 0.05  # and after that until another camera scores this much more
LAYER_NAMES = {0: "low", 1: "medium", 2: "high"}  # rtc.VideoQuality, as the status says it
LIMITATION_NAMES = {0: "none", 1: "cpu", 2: "bandwidth", 3: "other"}  # WebRTC's QualityLimitationReason
MIN_PICTURE_PX = 16  # a received frame smaller than this on a side is no camera's picture
ANALYSIS_AUDIO_MS = 50  # the analysis feed's sound arrives in frames this long
RECENT_OVERRIDES = 50  # what became of the latest overrides (LiveReport.override_outcomes, live_status)
STREAM_STALL_S = 3.0  # a subscribed, unmuted track whose stream yields nothing this long gets a new stream
INBOUND_MARK_S = 10  # the cameras' WebRTC counters are read this often, so the end reports the last 20-30 s


class LiveError(RuntimeError):
    """Live mode cannot start (not configured, server unreachable, bad credentials); the message says why."""


def director_token(settings, room: str, identity: str = "aiobs-director") -> str:
    from .tokens import TokenError, director_token as mint_director

    try:
        return mint_director(settings, room, identity)
    except TokenError as e:
        raise LiveError(f"live mode: {e}") from None


@dataclass
class LiveReport:
    session_id: str
    ticks: int = 0
    cameras: set[str] = field(default_factory=set)
    cuts: list[tuple[float, str, str]] = field(default_factory=list)  # (decision t, to, reason), as decided
    aired_cuts: list[tuple[float, str]] = field(default_factory=list)  # (program time, camera) as the picture cut
    overrides: int = 0
    # what became of the latest overrides the policy saw (RECENT_OVERRIDES): {"t", "operator", "action", "camera",
    # "outcome", "detail"}, the outcome "obeyed", "rejected" (its camera unknown or without a picture) or "ignored" (a
    # release with nothing locked), as the policy said for each (Decision.outcomes)
    override_outcomes: list[dict] = field(default_factory=list)
    rejected_overrides: int = 0  # malformed packets
    unauthorised_overrides: int = 0  # well-formed, from a participant without the operator role
    failed_ticks: int = 0
    missed_ticks: int = 0  # ticks skipped because the one before ran late
    late_cuts: int = 0  # cuts decided after their placed time had already aired (aired at once instead)
    program_frames: int = 0
    program_frames_late: int = 0  # program frames never made: the program loop ran late and went on from the present
    program_frame_errors: int = 0  # program frames that could not be made (logged; the program went on)
    program_audio_s: float = 0.0
    program_audio_dropped_s: float = 0.0  # sound left out after a stall, so the sound stays with the picture
    narration_lines: list[dict] = field(default_factory=list)  # Utterance.as_row() of every line placed
    narration_audio_s: float = 0.0
    first_program_frame_s: float | None = None  # from joining to the first program frame showing a camera
    tick_s: deque = field(default_factory=lambda: deque(maxlen=3000))  # the latest ticks' durations, start to end
    # for the latest fresh program frames: from its camera frame's arrival (+ delay and lip-sync hold) to sent
    frame_out_s: deque = field(default_factory=lambda: deque(maxlen=3000))
    # for the latest camera frames: from WebRTC's render time for it (decoded, out of the jitter buffer) to the
    # director's reader having it (the native queue and the event loop between them)
    frame_in_s: deque = field(default_factory=lambda: deque(maxlen=3000))
    frame_hold_s: deque = field(default_factory=lambda: deque(maxlen=3000))  # of frame_out_s: held for the spacing
    frame_wake_s: deque = field(default_factory=lambda: deque(maxlen=3000))  # of it: before the program thread began
    stage_ms: dict = field(default_factory=dict)  # analysis stages, {stage: {"p50", "p95", "mean", "n"}}, at the end
    vision_busy_ticks: int = 0  # ticks that went on without waiting for people still being detected
    frames_in: dict = field(default_factory=dict)  # camera -> video frames received
    frame_sizes: dict = field(default_factory=dict)  # camera -> (width, height) of its latest frame received
    program_encoder: dict = field(default_factory=dict)  # track_counts() of the program track, at the end
    inbound: dict = field(default_factory=dict)  # "camera/feed" -> track_counts() of its track as received, at the end
    inbound_window_s: float = 0.0  # ... its means over this last stretch of the session
    layer_changes: int = 0  # simulcast layer requests (the program's next cameras up, the others down)
    link_lost: int = 0  # times the LiveKit link dropped while directing (not our own leaving)
    link_down_s: float = 0.0  # how long it was down in all: the room got no program meanwhile
    stream_restarts: dict = field(default_factory=dict)  # "camera/feed" -> streams renewed after yielding nothing

    def _encoded(self) -> str:
        e = self.program_encoder
        if "encoded" not in e:
            return ""
        return (f", {e.get('captured', '?')} captured by the source, {e['encoded']} encoded, {e['sent']} sent"
                f" (encoder limited by: {e['limited_by']}; encode {e.get('encode_ms')} ms a frame, pacer"
                f" {e.get('send_delay_ms')} ms a packet)")

    def _received(self) -> list[str]:
        """The cameras' own WebRTC hop into the director, mean per frame over the last 20-30 s (not the busy start)
        and over the cameras still in the room at the end (named): jitter buffer and decode of the pictures, jitter
        buffer of the sound (its delay beside the picture's is the lip-sync gap the cameras bring)."""
        def mean(feed: str, key: str) -> str:
            xs = [c[key] for k, c in self.inbound.items() if k.endswith("/" + feed) and c.get(key) is not None]
            return f"{np.mean(xs):.0f}" if xs else "?"
        if not self.inbound:
            return []
        cams = sorted({k.split("/")[0] for k in self.inbound})
        return [f"cameras in ({' '.join(cams)}; means over the last {self.inbound_window_s:.0f} s): picture jitter "
                f"buffer {mean('video', 'jitter_buffer_ms')} ms + decode {mean('video', 'decode_ms')} ms, sound jitter "
                f"buffer {mean('audio', 'jitter_buffer_ms')} ms"]

    def timing(self) -> str:
        """'tick 41/120 ms (p50/p95), detect_track 35/80, ...': where a live session's time went."""
        def ms(xs) -> str:
            a = np.asarray(xs) * 1000
            return f"{np.percentile(a, 50):.0f}/{np.percentile(a, 95):.0f}"

        parts = [f"tick {ms(self.tick_s)} ms (p50/p95)"] if self.tick_s else []
        parts += [f"{k} {v['p50']:.0f}/{v['p95']:.0f}" for k, v in sorted(self.stage_ms.items()) if k != "tick"]
        if self.frame_out_s:  # (the three deques are appended together: frame by frame)
            made = np.asarray(self.frame_out_s) - np.asarray(self.frame_wake_s) - np.asarray(self.frame_hold_s)
            parts.append(f"program frame out {ms(self.frame_out_s)} ms after its camera frame came (of it: the program "
                         f"thread began after {ms(self.frame_wake_s)}, held for spacing {ms(self.frame_hold_s)}, "
                         f"composed and handed over in {ms(made)}; on a busy machine mostly waiting for a core)")
        if self.frame_in_s:
            parts.append(f"camera frames came {ms(self.frame_in_s)} ms after their render time (negative: before)")
        return ", ".join(parts + [f"{self.vision_busy_ticks} ticks went on while people were still being detected",
                                  "frames in " + (" ".join(f"{c}:{n}" for c, n in sorted(self.frames_in.items()))
                                                  or "none"),
                                  f"program frames out {self.program_frames} ({self.program_frames_late} never made: "
                                  f"the program loop ran late"
                                  + (f"; {self.program_frame_errors} could not be made" if self.program_frame_errors
                                     else "") + ")" + self._encoded(),
                                  f"stalled streams renewed {self.stream_restarts or 0}"] + self._received()
                            + ([f"simulcast layers asked {self.layer_changes} times"] if self.layer_changes else []))


def stream_stalled(now: float, yielded: float, started: float, renewed_in_a_row: int) -> bool:
    """Whether a subscribed, unmuted track's stream has yielded nothing for too long: STREAM_STALL_S since it last
    yielded or was (re)started, doubling with every renewal in a row that brought nothing (at most 8x)."""
    return now - max(yielded, started) >= STREAM_STALL_S * min(8, 2 ** renewed_in_a_row)


def next_in_line(scores: dict[str, float], taken: set[str], current: str | None, since: float,
                 now: float) -> tuple[str | None, float]:
    """The camera next in line for the program's best simulcast layer, and since when: the best-scored camera not
    `taken` (on air, about to air), among `scores` (cameras still sending: a camera that left is stale and out).
    The one in line keeps its place LAYER_HOLD_S at least, and after that until another scores LAYER_MARGIN more:
    near-equal scores would otherwise swap layers back and forth, and every swap costs a key frame."""
    others = {c: s for c, s in scores.items() if c not in taken and np.isfinite(s)}
    if not others:
        return None, now
    top = max(sorted(others), key=others.get)
    if current in others and (now - since < LAYER_HOLD_S or others[top] <= others[current] + LAYER_MARGIN):
        return current, since
    return top, now


def _per(total: float, n: int) -> float | None:
    """A WebRTC running total per frame (or packet), in ms; None before the first one."""
    return round(1000.0 * total / n, 1) if n else None


async def track_counts(track, timeout_s: float = 2.0) -> dict:
    """What WebRTC counted of a track so far, and where its time went (means per frame, ms, since it began).
    A published video track: `captured` (frames into its source), `encoded`, `sent` (its top layer), `limited_by`
    (what last held the encoder back: none, cpu, bandwidth, other), `encode_ms` and `send_delay_ms` (a packet's
    wait in the pacer). A received one: `received`, `decoded`, `dropped` (by the decoder or the renderer's queue),
    `freezes`, `jitter_buffer_ms` (a frame's wait in the jitter buffer), `decode_ms` and `processing_ms` (its first
    packet in to decoded). A received audio track: `jitter_buffer_ms` (a sample's wait, the sound's own delay).
    `totals` keeps the running totals behind each mean ({name: [seconds, count]}) for `counts_since`.
    {} when the stats cannot be read (the track is gone, the room left)."""
    try:
        stats = await asyncio.wait_for(track.get_stats(), timeout_s)
    except Exception:  # noqa: BLE001 - diagnostics only: a track that cannot say has nothing to add
        return {}
    out: dict = {"totals": {}}
    tot = out["totals"]
    for s in stats:
        kind = s.WhichOneof("stats")
        if kind == "media_source" and s.media_source.HasField("video"):
            out["captured"] = max(out.get("captured", 0), int(s.media_source.video.frames))
        elif kind == "outbound_rtp":
            o = s.outbound_rtp.outbound
            if o.frames_encoded >= out.get("encoded", -1):
                out.update(encoded=int(o.frames_encoded), sent=int(o.frames_sent),
                           limited_by=LIMITATION_NAMES.get(int(o.quality_limitation_reason), "other"),
                           encode_ms=_per(o.total_encode_time, int(o.frames_encoded)),
                           send_delay_ms=_per(o.total_packet_send_delay, int(s.outbound_rtp.sent.packets_sent)))
                tot.update(encode=[o.total_encode_time, int(o.frames_encoded)],
                           send_delay=[o.total_packet_send_delay, int(s.outbound_rtp.sent.packets_sent)])
        elif kind == "inbound_rtp":
            i = s.inbound_rtp.inbound
            if i.frames_received:
                out.update(received=int(i.frames_received), decoded=int(i.frames_decoded),
                           dropped=int(i.frames_dropped), freezes=int(i.freeze_count),
                           decode_ms=_per(i.total_decode_time, int(i.frames_decoded)),
                           processing_ms=_per(i.total_processing_delay, int(i.frames_decoded)))
                tot.update(decode=[i.total_decode_time, int(i.frames_decoded)],
                           processing=[i.total_processing_delay, int(i.frames_decoded)])
            if i.jitter_buffer_emitted_count:
                out["jitter_buffer_ms"] = _per(i.jitter_buffer_delay, int(i.jitter_buffer_emitted_count))
                tot["jitter_buffer"] = [i.jitter_buffer_delay, int(i.jitter_buffer_emitted_count)]
    return out if len(out) > 1 else {}


def counts_since(before: dict, after: dict) -> dict:
    """track_counts() `after`, its means (`*_ms`) taken over what happened since `before` (an earlier reading of the
    same track) rather than since the track began, which counts a busy start; `after` as it is without `before`."""
    out = dict(after)
    b, a = (before or {}).get("totals", {}), after.get("totals", {})
    for name, (secs, n) in a.items():
        if name in b and n > b[name][1]:
            out[f"{name}_ms"] = _per(secs - b[name][0], n - b[name][1])
    return out


class LiveDirector:
    def __init__(self, settings, room: str | None = None, *, ranker=None, models=None,
                 policy: PolicyConfig | None = None, program_size: tuple[int, int] = (1280, 720),
                 program_fps: int = 25, session_id: str | None = None, narrate: bool = False):
        """`models` (a runtime.model_manager.ModelManager) picks the ranker per session (champion / A/B challenger /
        baseline) and hot-swaps it between ticks; otherwise `ranker`, or the rule baseline."""
        if not settings.livekit_url:
            raise LiveError("live mode needs AIOBS_LIVEKIT_URL (ws://host:7880)")
        self.settings = settings
        self.room_name = room or settings.livekit_room
        self.rankers = models if models is not None else ranker  # None = the rule baseline
        self.hz = settings.tick_hz
        self.delay = float(settings.program_delay_s)
        # lip sync: the picture airs `av_sync` later than the sound (the sound `-av_sync` later when negative)
        self.av_sync = settings.program_av_sync_ms / 1000.0
        self._picture_hold, self._sound_hold = max(0.0, self.av_sync), max(0.0, -self.av_sync)
        # the lookahead is the delay, less one tick for the decision itself: a placed cut has not aired yet
        self.policy = replace(policy or settings.policy, lookahead_s=max(0.0, self.delay - 1.0 / self.hz))
        self.program_size = program_size
        self.program_fps = program_fps
        self.audio_mode = settings.program_audio
        self.report = LiveReport(session_id or f"live-{time.strftime('%Y%m%d-%H%M%S')}")
        # Threads: the event loop owns the readers (it pushes into the delay lines), the cut list (it appends), the
        # pending overrides and the sound; the executor thread owns the director core and the feature log (one tick
        # at a time); the `convert` thread turns frames into analysis images; the `aiobs-program` thread owns the
        # compositor and the picture's place in the cut list, and reads the delay lines (FrameRing: locked). The
        # analysis engine is the hand-over point for analysis: submit_* and tick() are thread-safe.
        # the tick never waits on the vision thread: a slow detection leaves the people as they were a moment longer
        self.engine = AnalysisEngine.from_settings([], settings, asr=settings.live_asr, vision_wait=False)
        log.info("live: models warmed up in %.1f s", self.engine.warm_up(ANALYSIS_SIZE))  # before joining the room
        self.compositor = Compositor(CompositorConfig(size=program_size, fps=program_fps))
        self.narrator = self._narrator() if narrate else None
        keep = self.delay + abs(self.av_sync) + 1.0
        self.video: dict[str, FrameRing] = {}
        self.audio: dict[str, AudioRing] = {}
        self._keep_s = keep
        self._cuts: list[tuple[float, str, str, str]] = []  # (cut time, camera, transition, reason), decided order
        self._picture_i = 0  # cuts the picture has taken
        self._sound_i = 0  # cuts the sound has taken
        self._sound_cam: str | None = None
        self._sound_prev: str | None = None
        self._sound_cut_s = -(10 ** 12)  # sample where the sound last changed mic
        self._converting: set[str] = set()
        self._next_analysis: dict[str, float] = {}
        self._convert_pool = ThreadPoolExecutor(1, thread_name_prefix="convert")
        self._pending_overrides: list[Override] = []
        self._picture_news = threading.Event()  # a frame of the camera on air arrived, or a cut was decided
        self._sound_news = asyncio.Event()  # sound of a mic the program's sound is made of arrived
        self._simulcast: dict[str, object] = {}  # camera -> its simulcast video publication
        self._layers: dict[str, int] = {}  # camera -> the simulcast layer asked for
        self._next_cam: str | None = None  # the camera next in line for the program's best layer, and since when
        self._next_since = 0.0
        self._t0 = 0.0
        self._tasks: list[asyncio.Task] = []
        self.tracks: dict[tuple[str, str], object] = {}  # (camera, "video"|"audio") -> subscribed remote track
        self._readers: dict[tuple[str, str], tuple] = {}  # (camera, feed) -> (reader task, track, publication)
        self._last_in: dict[tuple[str, str], float] = {}  # (camera, feed) -> when its stream last yielded
        self._started: dict[tuple[str, str], float] = {}  # (camera, feed) -> when its current stream started
        self._stalls: dict[tuple[str, str], int] = {}  # (camera, feed) -> streams renewed in a row, none yielding
        self.last: TickResult | None = None  # the newest tick, for status()
        self.link = "connecting"  # connecting | connected | reconnecting | disconnected
        self._down_since: float | None = None  # when the link dropped (None: up, or never up)
        self._leaving = False  # our own disconnect is not a lost link
        self._inbound_marks: deque = deque(maxlen=3)  # (t, {"camera/feed": track_counts()}) every INBOUND_MARK_S

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _narrator(self):
        """Lines are placed on the program clock, which runs `delay` behind the ticks: with a delay, a line goes into
        a pause heard whole; without, it starts after a short pause over ducked program sound."""
        from .narration import Narrator
        from .tts import build_tts

        try:
            tts = build_tts(self.settings, PROGRAM_AUDIO_RATE)
        except Exception as e:  # noqa: BLE001 - no voice: direct without narration rather than not at all
            log.error("live: no narration: the voice cannot be loaded (%s)", e)
            return None
        if tts is None:
            log.warning("live: narration asked for with tts_backend=none: no narration")
            return None
        lookback = max(0.0, self.delay - 1.0 / self.hz - AUDIO_MARGIN_S - 0.05)
        try:
            return Narrator.from_settings(self.settings, tts, names={}, lookback_s=lookback, tick_s=1.0 / self.hz,
                                          synchronous=False)
        except ValueError as e:  # the writer hook cannot be loaded
            tts.close()
            log.error("live: no narration: %s", e)
            return None

    # -- media in --------------------------------------------------------------------------------------------------
    def _start_reader(self, cam: str, feed: str, track, publication=None) -> None:
        """Read one feed of a subscribed track ("video", "audio": analysis, "program_audio") on its own task; the
        watchdog restarts it when it stalls."""
        read = {"video": self._read_video, "audio": self._read_audio, "program_audio": self._read_program_audio}[feed]
        old = self._readers.get((cam, feed))
        if old is not None and not old[0].done():
            old[0].cancel()
        self._started[(cam, feed)] = self.now()  # (the stall clock starts with the stream)
        task = asyncio.ensure_future(read(track, cam))
        self._readers[(cam, feed)] = (task, track, publication)
        self._tasks = [t for t in self._tasks if not t.done()] + [task]  # renewals must not pile up finished tasks

    async def _watch_streams(self, stop: asyncio.Event) -> None:
        """A subscribed track whose stream has yielded nothing for STREAM_STALL_S while not muted is subscribed to
        again (a new track, a new stream; without its publication, only a new stream). The SDK's stream sometimes
        yields nothing at all although WebRTC decodes the track (seen in bench/live.py: one to three of five cameras
        from their first second: stale, never analysed, never cut to). A new stream on the same track never brought
        frames back there, subscribing again always did, so that comes first (the camera is back after ~4 s, not 9).
        A track that stays silent (a camera that stopped sending without leaving) is retried less and less often."""
        k = 0
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = self.now()
            k += 1
            if k % INBOUND_MARK_S == 0:  # the cameras' WebRTC counters now, so the end can say what recent frames cost
                self._inbound_marks.append((now, await self._inbound_counts()))
            for key, (task, track, publication) in list(self._readers.items()):
                if task.done() or getattr(track, "muted", False):
                    continue
                yielded, started = self._last_in.get(key, float("-inf")), self._started[key]
                in_a_row = self._stalls.get(key, 0) if yielded < started else 0
                if not stream_stalled(now, yielded, started, in_a_row):
                    continue
                cam, feed = key
                n = self.report.stream_restarts.get(f"{cam}/{feed}", 0) + 1
                self.report.stream_restarts[f"{cam}/{feed}"] = n
                self._stalls[key] = in_a_row + 1
                metrics.STREAM_RESTARTS.labels(self.room_name, feed).inc()
                log.log(logging.WARNING if in_a_row == 0 else logging.INFO,
                        "live: %s's %s stream yielded nothing for %.0f s: %s (renewal %d)", cam, feed,
                        now - max(yielded, started), "a new stream" if publication is None else "subscribing again", n)
                if publication is None:
                    self._start_reader(cam, feed, track, publication)
                else:  # a new track comes back, read by a new stream
                    self._resubscribe(publication, cam, feed)

    async def _inbound_counts(self) -> dict[str, dict]:
        """track_counts() of every camera track read, video and audio, by "camera/feed" (the program's sound feed
        reads the same audio track: it is not asked twice)."""
        keys = sorted(k for k in self._readers if k[1] in ("video", "audio"))
        got = await asyncio.gather(*(track_counts(self._readers[k][1]) for k in keys))
        return {f"{cam}/{feed}": c for (cam, feed), c in zip(keys, got) if c}

    def _resubscribe(self, publication, cam: str, feed: str) -> None:
        async def again():
            try:
                publication.set_subscribed(False)
                await asyncio.sleep(0.5)
                publication.set_subscribed(True)
            except Exception as e:  # noqa: BLE001 - the room may be going away
                log.warning("live: could not subscribe to %s's %s again: %s", cam, feed, e)

        self._started[(cam, feed)] = self.now()
        self._tasks.append(asyncio.ensure_future(again()))

    async def _read_video(self, track, cam: str) -> None:
        from livekit import rtc

        stream = rtc.VideoStream(track)
        loop = asyncio.get_running_loop()
        ring = self.video.setdefault(cam, FrameRing(self._keep_s))
        try:
            async for ev in stream:
                t = self.now()
                if ev.timestamp_us > 0:  # WebRTC's render time, on the same monotonic clock
                    self.report.frame_in_s.append(time.monotonic() - ev.timestamp_us / 1e6)
                if min(ev.frame.width, ev.frame.height) < MIN_PICTURE_PX:  # not a camera's picture: what a closing
                    continue  # track leaves behind (8x8)
                self._last_in[(cam, "video")] = t
                self.report.frame_sizes[cam] = (ev.frame.width, ev.frame.height)
                ring.push(t, ev.frame)
                if cam == self.compositor.program:  # (a dissolve's other camera airs on the clock's slots)
                    self._picture_news.set()
                self.report.frames_in[cam] = self.report.frames_in.get(cam, 0) + 1
                # analysis needs a frame per tick, not every frame; it is converted and resized off the loop
                if t >= self._next_analysis.get(cam, 0.0) and cam not in self._converting:
                    self._next_analysis[cam] = t + 0.5 / self.hz
                    self._converting.add(cam)
                    fut = loop.run_in_executor(self._convert_pool, self._submit_analysis_frame, cam, t, ev.frame)
                    fut.add_done_callback(lambda f, c=cam: self._converted(c, f))
        finally:
            await stream.aclose()

    def _submit_analysis_frame(self, cam: str, t: float, frame) -> None:
        """Convert thread: a received frame -> the engine's analysis image."""
        self.engine.submit_frame(cam, t, _rgb(frame, ANALYSIS_SIZE))

    def _converted(self, cam: str, fut) -> None:
        self._converting.discard(cam)
        if fut.exception() is not None:
            log.warning("live: a frame of %s could not be converted: %s", cam, fut.exception())

    async def _read_audio(self, track, cam: str) -> None:
        """The analysis feed: 16 kHz mono in 50 ms frames (a fifth of the events WebRTC's 10 ms frames bring onto the
        event loop, which the program's frames share), stamped on arrival."""
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=ANALYSIS_AUDIO_MS)
        clock = ArrivalClock()
        try:
            async for ev in stream:
                self._last_in[(cam, "audio")] = self.now()
                pcm = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32768.0
                t = clock.start_of(self.now(), pcm.size / SAMPLE_RATE)
                self.engine.submit_audio(cam, t, pcm)
        finally:
            await stream.aclose()

    async def _read_program_audio(self, track, cam: str) -> None:
        """The program feed of the same track: 48 kHz mono into the camera's sound delay line."""
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=PROGRAM_AUDIO_RATE, num_channels=1)
        ring = self.audio.setdefault(cam, AudioRing(self._keep_s))
        clock = ArrivalClock()
        try:
            async for ev in stream:
                self._last_in[(cam, "program_audio")] = self.now()
                pcm = np.frombuffer(ev.frame.data, np.int16).astype(np.float32) / 32768.0
                ring.push(clock.start_of(self.now(), pcm.size / PROGRAM_AUDIO_RATE), pcm)
                if self.audio_mode == "mix" or cam == self._sound_cam:  # (a 10 ms crossfade waits one poll)
                    self._sound_news.set()
        finally:
            await stream.aclose()

    def _on_track(self, track, publication, participant) -> None:
        from livekit import rtc

        cam = publication.name or participant.identity
        if cam == "program":
            return
        self.engine.add_camera(cam)
        self.report.cameras.add(cam)
        self.tracks[(cam, "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio")] = track
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            if getattr(publication, "simulcasted", False):
                self._simulcast[cam] = publication
                self._layers.pop(cam, None)  # a new subscription: ask again
                self._choose_layers()
            self._start_reader(cam, "video", track, publication)
        else:
            self._start_reader(cam, "audio", track, publication)
            if self.audio_mode != "off":
                self._start_reader(cam, "program_audio", track, publication)
        log.info("live: subscribed to %s (%s)", cam, "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio")

    def _on_track_gone(self, track, publication, participant) -> None:
        """A camera's track left (it unpublished, its camera left the room, or the watchdog subscribes again): its
        readers stop (a stream that cannot come back is not renewed as a stalled one), no more layers are asked of
        it, and a picture that left makes the camera stale at once: the program cuts away from it at the next tick,
        not after `stale_after_s` of frames that never come (or of the tiny frames a closing track leaves)."""
        from livekit import rtc

        cam = getattr(publication, "name", "") or getattr(participant, "identity", "")
        if not cam or cam == "program":
            return
        for key, (task, tr, _) in list(self._readers.items()):
            if key[0] == cam and (tr is track or getattr(tr, "sid", None) == getattr(track, "sid", "")):
                task.cancel()
                del self._readers[key]
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.engine.camera_gone(cam, self.now())
            log.info("live: %s's picture left", cam)
        if self._simulcast.get(cam) is publication:
            del self._simulcast[cam]
            self._layers.pop(cam, None)

    def _choose_layers(self) -> None:
        """Simulcast: the best layer for the cameras the program may show next (the one on air, the one it is
        dissolving from, the best-scored other one: a cut to it airs sharp at once), the analysis layer for the rest
        (`live_analysis_layer`), so the director decodes and converts a fraction of the pixels for cameras it only
        analyses. Until the first tick, every camera sends its best."""
        from livekit import rtc

        comp, r = self.compositor, self.last
        if r is None:  # nothing decided yet
            best = set(self._simulcast)
        else:
            best = {comp.program} | {cam for _, cam, _, _ in self._cuts[self._picture_i:]}  # + cuts yet to air
            if comp.transition == "dissolve" and self.now() - self.delay - comp.cut_t < comp.config.dissolve_s:
                best.add(comp.previous)
            live = {c: s for c, s in r.scores.items() if not (r.contexts.get(c) and r.contexts[c].stale)}
            self._next_cam, self._next_since = next_in_line(live, best, self._next_cam, self._next_since, self.now())
            if self._next_cam is not None:
                best.add(self._next_cam)
        for cam, pub in self._simulcast.items():
            want = rtc.VideoQuality.VIDEO_QUALITY_HIGH if cam in best else self._analysis_layer(pub)
            if self._layers.get(cam) == want:
                continue
            self._layers[cam] = want
            try:
                pub.set_video_quality(want)
                self.report.layer_changes += 1
            except Exception as e:  # noqa: BLE001 - the publication went away, or has no layers: it sends what it sends
                log.info("live: %s: no simulcast layer choice (%s)", cam, e)

    def _analysis_layer(self, publication) -> int:
        from livekit import rtc

        q = rtc.VideoQuality
        mode = self.settings.live_analysis_layer
        if mode == "auto":
            return q.VIDEO_QUALITY_MEDIUM if (publication.height or 0) >= 2 * ANALYSIS_SIZE[1] else q.VIDEO_QUALITY_HIGH
        return {name: quality for quality, name in LAYER_NAMES.items()}[mode]

    def _on_data(self, packet) -> None:
        if getattr(packet, "topic", "") != OVERRIDE_TOPIC:
            return
        sender = getattr(packet, "participant", None)
        who = getattr(sender, "identity", "?")
        if sender is None or role_of(sender) != "operator":  # a sender nobody can name is no operator either
            log.warning("live: ignored an override from %s: the participant's token has no operator role "
                        "(attributes %s, metadata %r)", who, dict(getattr(sender, "attributes", None) or {}),
                        str(getattr(sender, "metadata", ""))[:200])
            self.report.unauthorised_overrides += 1
            metrics.OVERRIDES.labels(self.room_name, "unauthorised").inc()
            return
        try:
            msg = json.loads(bytes(packet.data).decode())
        except (ValueError, UnicodeDecodeError) as e:
            msg = e
        self.override(msg, str(who))

    def override(self, msg, who: str) -> str | None:
        """An operator's override ({"action", "camera", "timeout_s"}) from an authorised path (a data packet of an
        operator participant; the service's `live_override`, bearer token checked): validated, then queued for the
        next tick. Event loop only. Returns why it was rejected, or None."""
        try:
            if isinstance(msg, Exception):
                raise msg
            if not isinstance(msg, dict):
                raise ValueError("an override is a JSON object")
            ov = Override.from_message(msg)
            if ov.camera and ov.camera not in self.report.cameras:
                raise ValueError(f"no camera {ov.camera!r} in the room")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            log.warning("live: rejected an override from %s: %s", who, e)
            self.report.rejected_overrides += 1
            metrics.OVERRIDES.labels(self.room_name, "malformed").inc()
            return str(e)
        if not ov.operator:
            ov = replace(ov, operator=who)  # the log names who directed
        self._pending_overrides.append(ov)
        return None

    def _link(self, state: str, reconnected: bool = False) -> None:
        if state != self.link:
            log.info("live: LiveKit link %s -> %s", self.link, state)
            now = time.monotonic()
            if self.link == "connected" and not self._leaving:  # dropped: counted, and timed until it is back
                self.report.link_lost += 1
                self._down_since = now
            elif state == "connected" and self._down_since is not None:
                self.report.link_down_s += now - self._down_since
                self._down_since = None
        self.link = state
        metrics.CONNECTED.labels(self.room_name).set(1 if state == "connected" else 0)
        if reconnected:
            metrics.RECONNECTS.labels(self.room_name).inc()

    def status(self, recent: int = 10) -> dict:
        """A snapshot for operators (the service's live status API, the control page): the link, the program, every
        camera's score and features at the last tick, the recent decisions with their reasons, the ranker in use,
        and the tick health. Safe to call from the event loop at any time."""
        from features.extract import RANKER_FEATURES

        r, rep = self.last, self.report
        cams = {}
        if r is not None:
            for cid, score in r.scores.items():
                ctx = r.contexts.get(cid)
                cams[cid] = {"score": score, "talking": bool(ctx and ctx.talking), "floor": bool(ctx and ctx.floor),
                             "stale": bool(ctx and ctx.stale)}
        for cid, x in (r.features if r is not None else {}).items():
            cams.setdefault(cid, {})["features"] = {f: (None if np.isnan(v) else float(v))
                                                    for f, v in zip(RANKER_FEATURES, x.tolist())}
        for cid, (w, h) in list(rep.frame_sizes.items()):
            cams.setdefault(cid, {})["frame_size"] = [w, h]  # as received: a simulcast layer, or the network's choice
        for cid, q in list(self._layers.items()):
            cams.setdefault(cid, {})["layer"] = LAYER_NAMES.get(q, str(q))
        for cid, c in cams.items():  # a camera whose frames came after the last tick: nothing to take yet
            c["in_tick"] = r is not None and cid in r.scores
        return {"session_id": rep.session_id, "room": self.room_name, "link": self.link,
                "t": None if r is None else r.t, "program": self.compositor.program,
                "decision": None if r is None else {"reason": r.decision.reason, "detail": r.decision.detail},
                "cameras": cams, "recent_cuts": [{"t": t, "to": to, "reason": why} for t, to, why in rep.cuts[-recent:]],
                "recent_overrides": rep.override_outcomes[-recent:],
                "variant": None if r is None else r.variant, "model_version": None if r is None else r.model_version,
                "program_delay_s": self.delay,
                "health": {"ticks": rep.ticks, "missed_ticks": rep.missed_ticks, "failed_ticks": rep.failed_ticks,
                           "late_cuts": rep.late_cuts, "program_frames": rep.program_frames,
                           "program_frames_late": rep.program_frames_late,
                           "program_frame_errors": rep.program_frame_errors,
                           "program_frame_out_ms_p50_p95": None if not rep.frame_out_s else [
                               round(float(v), 1) for v in np.percentile(np.asarray(rep.frame_out_s) * 1000, [50, 95])],
                           "simulcast_layer_changes": rep.layer_changes,
                           "link_lost": rep.link_lost, "link_down_s": round(rep.link_down_s, 1),
                           "program_audio_dropped_s": round(rep.program_audio_dropped_s, 3),
                           "overrides": rep.overrides, "rejected_overrides": rep.rejected_overrides,
                           "unauthorised_overrides": rep.unauthorised_overrides}}

    # -- the tick --------------------------------------------------------------------------------------------------
    def _tick(self, core: DirectorCore, flog: FeatureLog, t: float, overrides: list[Override]) -> TickResult | None:
        """Executor thread: analysis -> the director core (scores, policy, rows)."""
        started = time.perf_counter()
        obs = self.engine.tick(t)
        if not obs:
            return None
        ordered = list(obs.values())
        x = scene_matrix(ordered)
        r = core.tick(t, [CameraTick.from_observation(o, row) for o, row in zip(ordered, x)], overrides,
                      started=started)
        flog.maybe_rotate()
        if self.narrator is not None:
            for o in ordered:
                if o.camera_id not in self.narrator.reader.names:
                    self.narrator.add_camera(o.camera_id)
            try:  # narration never stops directing
                line = self.narrator.tick(t, ordered, r)
            except Exception:  # noqa: BLE001
                log.exception("live: narration failed at tick %.2f; directing goes on", t)
                line = None
            if line is not None:
                self.report.narration_lines.append(line.as_row())
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
                metrics.TICKS_FAILED.labels(self.room_name).inc()
                r = None
            metrics.TICK_SECONDS.labels(self.room_name).observe(self.now() - start)
            if r is not None:  # (no camera yet: nothing was ticked)
                self.report.tick_s.append(self.now() - start)
            if r is None:
                self._pending_overrides[:0] = ovs  # no camera yet: the overrides wait for the next tick
            else:
                self.last = r
                d = r.decision
                if d.cut:  # the program follows when its clock (the delay behind) reaches the cut
                    self._cuts.append((d.cut_time, d.to_camera, d.transition or "cut", d.reason))
                    # what an operator reads in the log: a lock that gave way to a camera that left says so here
                    log.info("live: cut %s -> %s at %.1f s (%s: %s)", d.from_camera or "-", d.to_camera, d.cut_time,
                             d.reason, d.detail)
                    self.report.cuts.append((r.t, d.to_camera, d.reason))
                    self._picture_news.set()
                self.report.overrides += len(r.overrides)
                for ov, (outcome, detail) in zip(r.overrides, d.outcomes):
                    self.report.override_outcomes.append({"t": r.t, "operator": ov.operator, "action": ov.action,
                                                          "camera": ov.camera, "outcome": outcome, "detail": detail})
                del self.report.override_outcomes[:-RECENT_OVERRIDES]
                self.report.ticks += 1
                self._choose_layers()
            k += 1
            behind = int(self.now() * self.hz) - k
            if behind > 0:  # a slow tick never makes up for lost time in a burst: skip to the present
                self.report.missed_ticks += behind
                metrics.TICKS_MISSED.labels(self.room_name).inc(behind)
                k += behind
                log.warning("live: %d tick(s) skipped: a tick took %.2f s", behind, self.now() - start)
            await asyncio.sleep(max(0.0, k / self.hz - self.now()))

    # -- the program: picture and sound leave the delay lines on one clock -----------------------------------------
    def _take_picture_cuts(self, pt: float) -> None:
        while self._picture_i < len(self._cuts) and self._cuts[self._picture_i][0] <= pt + 1e-9:
            ct, cam, transition, _ = self._cuts[self._picture_i]
            if ct < pt - 1.5 / self.program_fps:  # decided after its placed time aired: cut now instead
                if self.delay > 0:  # (with no delay every cut airs as soon as it is decided)
                    self.report.late_cuts += 1
                    metrics.LATE_CUTS.labels(self.room_name).inc()
                ct = pt
            first = self._picture_i == 0 and not self.compositor.program
            if cam != self.compositor.program:
                self.compositor.cut_to(cam, ct, "cut" if first else transition)
                self.report.aired_cuts.append((ct, cam))
            self._picture_i += 1
        if not self.compositor.program:  # before the first decision: the first camera with a picture, not black
            ready = sorted(c for c, ring in list(self.video.items()) if ring.at(pt - self._picture_hold) is not None)
            if ready:
                self.compositor.cut_to(ready[0], pt)
                self.report.aired_cuts.append((pt, ready[0]))

    async def _program_video(self, source, stop: asyncio.Event) -> None:
        """The program picture runs on its own thread (`_program_frames`): on the event loop, which every camera's
        frames and sound keep busy, it was woken late and its frames left late or not at all (a frame composed on
        the program thread still came back through the loop before it left). This task only starts and stops it."""
        done = threading.Event()

        def program():
            try:
                self._program_frames(source, done)
            except Exception:  # noqa: BLE001 - never a silent stop: the log says the picture stopped, and why
                log.exception("live: the program picture stopped")

        thread = threading.Thread(target=program, name="aiobs-program", daemon=True)
        thread.start()
        try:
            await stop.wait()
        finally:
            done.set()
            self._picture_news.set()
            await asyncio.to_thread(thread.join, 5.0)

    def _program_frames(self, source, done: threading.Event) -> None:
        """Program thread: frames, each sent when the ProgramClock says: the on-air camera's new frame as soon as it
        is due (its arrival, plus the broadcast delay and the lip-sync hold), the picture on air again where no fresh
        frame came in time. A frame that cannot be made (a broken picture, a compositor error) is logged and counted
        (`program_frame_errors`), and the program goes on with the next one."""
        lag = self.delay + self._picture_hold  # a frame that arrived at t airs at t + lag
        clock = ProgramClock(self.program_fps, self.now())
        aired_t = -1.0  # arrival time of the on-air camera's frame last sent
        while not done.is_set():
            sent = self.now()
            try:
                pt = sent - self.delay  # the program clock (cuts, transitions); the sound's clock too
                self._take_picture_cuts(pt)
                comp = self.compositor
                need = {comp.program}
                if comp.transition == "dissolve" and pt - comp.cut_t < comp.config.dissolve_s:
                    need.add(comp.previous)
                ft = pt - self._picture_hold  # lip sync: the frames that show the moment the sound now carries
                stamped = {cam: self.video[cam].stamped_at(ft) for cam in need if cam in self.video}
                frames = {cam: None if v is None else v[1] for cam, v in stamped.items()}
                on_air = stamped.get(comp.program)
                fresh = on_air is not None and on_air[0] != aired_t
                aired_t = on_air[0] if on_air is not None else aired_t
                handed, held = self._compose_and_send(pt, frames, source, clock)
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the program
                self.report.program_frame_errors += 1
                if self.report.program_frame_errors in (1, 10, 100) or self.report.program_frame_errors % 1000 == 0:
                    log.exception("live: a program frame could not be made (%d so far): %s",
                                  self.report.program_frame_errors, e)
                done.wait(clock.period)
                continue
            if fresh:
                self.report.frame_out_s.append(handed - (aired_t + lag))
                self.report.frame_hold_s.append(held)
                self.report.frame_wake_s.append(sent - (aired_t + lag))
                metrics.PROGRAM_FRAME_OUT_SECONDS.labels(self.room_name).observe(self.report.frame_out_s[-1])
            self.report.program_frames += 1
            metrics.PROGRAM_FRAMES.labels(self.room_name).inc()
            if self.report.first_program_frame_s is None and on_air is not None:
                self.report.first_program_frame_s = self.now()
            self.report.program_frames_late += clock.sent(sent, handed, aired_t + lag if fresh else None)
            while not done.is_set():  # until the next frame is due; a frame on air or a cut decided wakes us
                self._picture_news.clear()
                ring = self.video.get(self.compositor.program)
                nxt = ring.arrival_after(aired_t) if ring is not None else None
                i = self._picture_i
                cut = self._cuts[i][0] + self.delay if i < len(self._cuts) else None
                wait = clock.due(None if nxt is None else nxt + lag, cut) - self.now()
                if wait <= 0 or not self._picture_news.wait(wait):
                    break

    def _compose_and_send(self, pt: float, frames: dict, source, clock: ProgramClock) -> tuple[float, float]:
        """Program thread: convert the frames on air, composite one program frame, hold it as long as the clock says
        (WebRTC would drop a frame handed over sooner), and hand it to the source. Returns when it was handed over
        (session clock) and how long it was held."""
        from livekit import rtc

        rgb = {cam: None if f is None else _rgb(f, self.program_size) for cam, f in frames.items()}
        rgba = cv2.cvtColor(self.compositor.compose(pt, rgb), cv2.COLOR_RGB2RGBA)
        hold = max(0.0, clock.hold(self.now()))
        if hold > 0:
            time.sleep(hold)
        w, h = self.program_size
        source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, rgba.tobytes()))
        return self.now(), hold

    def _program_samples(self, s0: int, n: int) -> np.ndarray:
        """The program sound for samples [s0, s0 + n) of the session clock: the mic of the camera on program (the
        cut's audio switches `audio_lead_s` before the picture: J-cut), crossfaded over 10 ms; or every mic mixed."""
        if self.audio_mode == "mix":
            if not self.audio:
                return np.zeros(n, np.float32)
            mix = sum(ring.read(s0, n) for ring in self.audio.values())
            return self._with_narration(np.clip(mix / np.sqrt(len(self.audio)), -1.0, 1.0).astype(np.float32), s0)
        # (sound held back for lip sync: its cut is placed that much earlier on its own clock, to air with the picture's)
        lead = self.policy.audio_lead_s + self._sound_hold
        end_t = (s0 + n) / PROGRAM_AUDIO_RATE
        while self._sound_i < len(self._cuts) and self._cuts[self._sound_i][0] - lead <= end_t:
            ct, cam, _, _ = self._cuts[self._sound_i]
            if cam != self._sound_cam:
                self._sound_prev, self._sound_cam = self._sound_cam, cam
                self._sound_cut_s = max(s0, int(round((ct - lead) * PROGRAM_AUDIO_RATE)))
            self._sound_i += 1
        if self._sound_cam is None and self.compositor.program:  # the picture's first camera until the first cut
            self._sound_cam = self.compositor.program
        out = self._ring_read(self._sound_cam, s0, n)
        if self._sound_prev is not None and s0 < self._sound_cut_s + AUDIO_FADE:
            r = np.clip((np.arange(s0, s0 + n) - self._sound_cut_s) / AUDIO_FADE, 0.0, 1.0).astype(np.float32)
            out = out * r + self._ring_read(self._sound_prev, s0, n) * (1.0 - r)
        return self._with_narration(out, s0)

    def _with_narration(self, out: np.ndarray, s0: int) -> np.ndarray:
        if self.narrator is None or not self.settings.narration_in_program or not self.narrator.lines:
            return out
        from .narration.mix import mix_into_program

        return mix_into_program(out, s0, PROGRAM_AUDIO_RATE, self._lines_near(s0, out.size),
                                self.settings.narration_duck_db)

    def _lines_near(self, s0: int, n: int) -> list:
        from .narration.mix import lines_near

        rate = PROGRAM_AUDIO_RATE
        return lines_near(self.narrator.lines, s0 / rate - 1.0, (s0 + n) / rate + 1.0)

    def _ring_read(self, cam: str | None, s0: int, n: int) -> np.ndarray:
        ring = self.audio.get(cam) if cam else None
        return ring.read(s0, n) if ring is not None else np.zeros(n, np.float32)

    async def _program_audio(self, source, stop: asyncio.Event, samples=None, what: str = "program") -> None:
        """Sound on the program clock, 10 ms at a time: the program's (or, for the narration track, `samples`)."""
        from livekit import rtc

        own = samples is None  # the program's sound, made of the mics (not the narration, made here)
        samples = samples or self._program_samples
        s_next: int | None = None
        while not stop.is_set():
            target = int((self.now() - self.delay - self._sound_hold) * PROGRAM_AUDIO_RATE)
            s_end = self._sound_ready(target) if own else target - int(AUDIO_MARGIN_S * PROGRAM_AUDIO_RATE)
            s_next, dropped = audio_resume(s_next, s_end)
            if dropped and what == "program" and self.audio:  # (with no mic in the room, only silence was left out)
                self.report.program_audio_dropped_s += dropped / PROGRAM_AUDIO_RATE
            while s_next + AUDIO_CHUNK <= s_end:
                pcm = (np.clip(samples(s_next, AUDIO_CHUNK), -1, 1) * 32767).astype(np.int16)
                await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), PROGRAM_AUDIO_RATE, 1, AUDIO_CHUNK))
                s_next += AUDIO_CHUNK
                if what == "program":
                    self.report.program_audio_s += AUDIO_CHUNK / PROGRAM_AUDIO_RATE
                else:
                    self.report.narration_audio_s += AUDIO_CHUNK / PROGRAM_AUDIO_RATE
            if own:  # until the mic on air brings more (or one chunk's time passes)
                self._sound_news.clear()
                try:
                    await asyncio.wait_for(self._sound_news.wait(), AUDIO_CHUNK / PROGRAM_AUDIO_RATE)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(AUDIO_CHUNK / PROGRAM_AUDIO_RATE)

    def _sound_ready(self, target: int) -> int:
        """How far (absolute sample, exclusive) the program's sound can be sent now (sound_ready), given the mics it
        is made of: every mic (mix), or the one on air and, while crossfading, the one before."""
        if self.audio_mode == "mix":
            cams = list(self.audio)
        else:
            fading = self._sound_prev if target < self._sound_cut_s + AUDIO_FADE else None  # crossfading from it
            cams = [c for c in (self._sound_cam or self.compositor.program, fading) if c]
        return sound_ready(target, [self.audio[c].next for c in cams if c in self.audio])

    def _narration_samples(self, s0: int, n: int) -> np.ndarray:
        from .narration.mix import narration_samples

        return narration_samples(s0, n, PROGRAM_AUDIO_RATE, self._lines_near(s0, n))

    # -- run -------------------------------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None, stop: asyncio.Event | None = None) -> LiveReport:
        from livekit import rtc

        stop = stop or asyncio.Event()
        room = rtc.Room()
        room.on("track_subscribed", self._on_track)
        room.on("track_unsubscribed", self._on_track_gone)
        room.on("data_received", self._on_data)
        room.on("reconnecting", lambda: self._link("reconnecting"))
        room.on("reconnected", lambda: self._link("connected", reconnected=True))
        room.on("disconnected", lambda *_: self._link("disconnected"))
        try:
            await room.connect(self.settings.livekit_url, director_token(self.settings, self.room_name))
        except LiveError:
            self.close()
            raise
        except Exception as e:  # noqa: BLE001 - unreachable server, bad key: say so, do not crash with a trace
            self.close()
            raise LiveError(f"cannot join LiveKit room {self.room_name!r} at {self.settings.livekit_url}: {e}") \
                from e
        self._t0 = time.monotonic()
        self._link("connected")
        track = None
        try:
            source = rtc.VideoSource(*self.program_size)
            track = rtc.LocalVideoTrack.create_video_track("program", source)
            await room.local_participant.publish_track(track, rtc.TrackPublishOptions(
                source=rtc.TrackSource.SOURCE_CAMERA, video_encoding=rtc.VideoEncoding(
                    max_bitrate=program_bitrate(self.program_size, self.program_fps,
                                                self.settings.program_bitrate_kbps),
                    # frames leave as they come, MIN_SPACING apart at the closest: a source capped at the program
                    # rate would drop every frame that came sooner than 1/max_framerate after the one before
                    max_framerate=ProgramClock.encoder_max_fps(self.program_fps))))
            sound = None
            if self.audio_mode != "off":
                # a short queue: sound queued while nobody consumes it yet would stay behind the picture for good
                sound = rtc.AudioSource(PROGRAM_AUDIO_RATE, 1, queue_size_ms=AUDIO_QUEUE_MS)
                await room.local_participant.publish_track(
                    rtc.LocalAudioTrack.create_audio_track("program", sound),
                    rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            voice = None
            if self.narrator is not None:  # the narration alone, for a mixer downstream (or a second language)
                voice = rtc.AudioSource(PROGRAM_AUDIO_RATE, 1, queue_size_ms=AUDIO_QUEUE_MS)
                await room.local_participant.publish_track(
                    rtc.LocalAudioTrack.create_audio_track("narration", voice),
                    rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
            with FeatureLog(self.settings.spool_dir, TABLES.values()) as flog:
                if self.narrator is not None:
                    self.narrator.bind(flog, self.report.session_id, self.room_name)
                workers = [asyncio.ensure_future(self._ticks(flog, stop)),
                           asyncio.ensure_future(self._program_video(source, stop)),
                           asyncio.ensure_future(self._watch_streams(stop))]
                if sound is not None:
                    workers.append(asyncio.ensure_future(self._program_audio(sound, stop)))
                if voice is not None:
                    workers.append(asyncio.ensure_future(self._program_audio(voice, stop, self._narration_samples,
                                                                             "narration")))
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
        finally:  # whatever failed after joining: leave the room and free the models and threads
            if track is not None:  # what became of the frames sent: the encoder may drop some (cpu, frame rate)
                self.report.program_encoder = await track_counts(track)
            if self._down_since is not None:  # down until the end
                self.report.link_down_s += time.monotonic() - self._down_since
                self._down_since = None
            self._leaving = True
            # where the cameras' time went on the way in, over the last 20-30 s (a busy start not counted)
            mark_t, mark = self._inbound_marks[0] if self._inbound_marks else (0.0, {})
            self.report.inbound = {key: counts_since(mark.get(key), c) for key, c in
                                   (await self._inbound_counts()).items()}
            self.report.inbound_window_s = self.now() - mark_t
            await room.disconnect()
            self._link("disconnected")
            self.close()
        return self.report


    def close(self) -> None:
        """Free the models and threads (run() calls it; also for a director that was built but never run)."""
        self.report.stage_ms = self.engine.latency_summary()
        self.report.vision_busy_ticks = self.engine.vision_busy_ticks
        self.engine.close()
        if self.narrator is not None:
            self.narrator.close()
        self._convert_pool.shutdown(wait=False, cancel_futures=True)


def _rgb(frame, size: tuple[int, int]) -> np.ndarray:
    """A LiveKit video frame as an RGB array of `size` (width, height)."""
    from livekit import rtc

    f = frame.convert(rtc.VideoBufferType.RGB24)
    rgb = np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 3)
    return rgb if (f.width, f.height) == tuple(size) else cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
