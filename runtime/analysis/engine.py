"""The analysis scheduler: latest-frame slots per camera, one pass per director tick, never blocking the program path.

    engine = AnalysisEngine.from_settings(["cam1", "cam2"], settings)
    engine.submit_frame("cam1", t, rgb)        # overwrites the slot: a slow tick drops frames, never queues them
    engine.submit_audio("cam1", t, samples)    # 16 kHz mono float32, queued for that camera's next tick
    observations = engine.tick(t)              # {camera_id: CameraObservation}

Threads: `submit_frame`, `submit_audio` and `add_camera` may be called from any thread (live mode calls them on the
asyncio loop) while `tick` runs on another (an executor). They only touch a camera's inbox (the frame slot and the
audio received since the last tick) under one short lock; `tick` swaps the inboxes out under that lock and does all
the analysis outside it, on state that only it touches. Ticks are serialised.

Each stage is guarded: a model that fails to load or raises leaves its features at their defaults and names the
reason in `observation.degraded`; a camera without frames for `stale_after_s` is marked stale, not fatal.
ASR runs on a worker thread (latest-only, skipped while it lags) unless `asr_sync=True` (deterministic, for tests
and offline evaluation). Per-stage latency is kept for metrics and the benchmark.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from features.observations import CameraObservation
from features.schema import STAGE_OFF
from runtime import metrics
from runtime.media import SAMPLE_RATE
from runtime.models import resolve_whisper, resolve_yolo

from .asr import AsrStream, SpeechRecognizer
from .audio import VoiceActivity, dbfs
from .faces import make_face_detector
from .motion import MotionMeter
from .people import CameraTracker, PersonDetector

log = logging.getLogger(__name__)


AUDIO_KEEP_S = 1.5  # audio kept per camera for level and VAD (the VAD reads the last ~1 s)
INBOX_AUDIO_S = 10.0  # audio an inbox holds while no tick takes it (a stalled tick); older chunks are dropped


@dataclass
class _Camera:
    """One camera's state, with two owners: the inbox fields are guarded by `AnalysisEngine._lock` (written by
    submit_* on any thread, swapped out by tick); everything else belongs to tick alone (the ASR stream has its own
    lock for the ASR worker)."""

    id: str
    tracker: CameraTracker | None
    motion: MotionMeter = field(default_factory=MotionMeter)
    asr: AsrStream | None = None
    # -- inbox (under the engine's lock) --
    frame: tuple[float, np.ndarray] | None = None  # latest-frame slot
    frames_dropped: int = 0  # frames overwritten in the slot before a tick took them
    left: bool = False  # its picture left (camera_gone); a tick takes it
    left_t: float = float("-inf")  # when: a frame from before then (converted late) is not taken
    inbox_audio: deque = field(default_factory=deque)  # (t, samples) submitted since the last tick
    inbox_samples: int = 0
    audio_dropped: int = 0  # samples dropped from the inbox because no tick took them within INBOX_AUDIO_S
    # -- tick-owned --
    last_frame_t: float | None = None
    audio: deque = field(default_factory=deque)  # (t, samples) of the last AUDIO_KEEP_S, for level and VAD
    audio_end_t: float | None = None
    audio_samples: int = 0  # samples taken into analysis (received = audio_samples + audio_dropped)
    last: CameraObservation | None = None


def _quiet_at(p: np.ndarray, end_t: float, span_s: float, min_chunks: int = 2) -> float | None:
    """Middle of the latest run of >= `min_chunks` non-speech VAD chunks that overlaps the last `span_s` before
    `end_t` (the place to cut between words), or None when there was no such pause."""
    from .audio import VAD_CHUNK

    dt = VAD_CHUNK / SAMPLE_RATE
    quiet = p < 0.5
    n = len(p)
    first = max(0, n - int(np.ceil(span_s / dt)) - min_chunks)
    i = n - 1
    while i >= first:
        if not quiet[i]:
            i -= 1
            continue
        j = i
        while j - 1 >= 0 and quiet[j - 1]:
            j -= 1
        if i - j + 1 >= min_chunks:
            lo, hi = max(j, n - int(np.ceil(span_s / dt))), i + 1
            if hi > lo:
                mid = (lo + hi) / 2 if (hi - lo) >= 1 else hi - 0.5
                return float(end_t - (n - mid) * dt)
        i = j - 1
    return None


MASK_BINS = 8  # the speech mask splits a tick into this many bins
CPU_VISION_HZ = 1.0  # auto on a CPU: people/faces at most once a second per camera...
CPU_VISION_BUDGET_FPS = 3.0  # ...and at most 3 frames a second across all cameras (5 cameras: 0.6 Hz each)
_PEOPLE = ("people", "track_continuity", "track_age_s", "person_speed")  # what person detection + tracking give
_NOT_PEOPLE = ("faces", "motion_energy", "subject_motion")


def _speech_mask(p: np.ndarray, span_s: float, bins: int = MASK_BINS, on: float = 0.5, off: float = 0.35) -> int:
    """Voice activity of the last `span_s` of audio as a bit mask: bit b (LSB = oldest) is set when the VAD chunk
    under the centre of bin b is speech. Speech is marked the way Silero's own segmenter does it: it starts at
    `on`, continues down to `off` (soft word endings), and is padded by one chunk on each side. It is how the
    director core sees word boundaries between ticks."""
    from .audio import VAD_CHUNK

    dt = VAD_CHUNK / SAMPLE_RATE
    n = len(p)
    speech = np.zeros(n, bool)
    active = False
    for i in range(n):
        active = p[i] >= on or (active and p[i] >= off)
        speech[i] = active
    padded = speech.copy()
    padded[1:] |= speech[:-1]
    padded[:-1] |= speech[1:]
    mask = 0
    for b in range(bins):
        back = span_s - (b + 0.5) * span_s / bins  # seconds before the end of the audio
        i = n - 1 - int(back / dt)
        if 0 <= i < n and padded[i]:
            mask |= 1 << b
    return mask


def people_detector(settings):
    """The person detector for an engine built from settings: its own `PersonDetector`, or (batching on: by default
    with CUDA) the process's shared `DetectionBatcher` for this model, device and size, so that every room in the
    process is detected in one batch."""
    from .batching import shared_detector
    from .people import resolve_device

    device = resolve_device(settings.device)
    resolved = resolve_yolo(settings.yolo_model, offline=settings.offline, search_dirs=(settings.models_dir,))

    def build():
        return PersonDetector(resolved, device=device, imgsz=settings.detect_imgsz, backend=settings.detect_backend)

    if not _batching(settings, device):
        return build()
    key = ("people", resolved.target, device, settings.detect_imgsz, settings.detect_backend)
    return shared_detector(key, build, max_wait_ms=settings.detect_batch_wait_ms)


def _batching(settings, device: str) -> bool:
    return settings.detect_batching == "on" or (settings.detect_batching == "auto" and device.startswith("cuda"))


def face_detector(settings):
    """Haar (the CPU default), none, or a YOLO face model; a batched (GPU) face model is shared by the process's rooms
    like the person detector."""
    from .batching import shared_detector
    from .people import resolve_device

    device = resolve_device(settings.device)
    det = make_face_detector(settings.face_backend, device=device) if settings.face_backend in ("", "haar", "none") \
        else None
    if det is not None or settings.face_backend == "none":
        return det
    if not _batching(settings, device):
        return make_face_detector(settings.face_backend, device=device)
    key = ("faces", settings.face_backend, device)
    shared = shared_detector(key, lambda: make_face_detector(settings.face_backend, device=device),
                             max_wait_ms=settings.detect_batch_wait_ms, method="detect_many")
    return shared if getattr(shared.detector, "batched", False) else shared.detector


class AnalysisEngine:
    def __init__(self, camera_ids: list[str], *, detector: PersonDetector | None, face_detector=None,
                 vad: VoiceActivity | None = None, recognizer: SpeechRecognizer | None = None, vlm=None,
                 keywords: list[str] = (), tick_hz: float = 5.0, stale_after_s: float = 2.0,
                 asr_sync: bool = False, degraded: dict[str, str] | None = None, face_every: int = 2,
                 vision_every: int = 1, vision_budget_fps: float | None = None, vision_wait: bool = True):
        self.detector = detector
        self.face_detector = face_detector
        # faces run on the vision thread with people: a batched (GPU) face model over all of a tick's frames at once,
        # and live (vision_wait False) any face model, one frame after another, so the tick never spends its budget
        # on them (Haar: about 45 ms a frame on a 2-core CPU); files on a CPU keep them in the tick (reproducible,
        # and the vision thread is the bottleneck there)
        self._faces_batched = bool(getattr(face_detector, "batched", False)) and detector is not None
        self._faces_on_vision = face_detector is not None and detector is not None and (
            self._faces_batched or not vision_wait)
        self.vad = vad
        self.recognizer = recognizer
        self.vlm = vlm
        self.tick_hz = tick_hz
        self.stale_after_s = stale_after_s
        self.asr_sync = asr_sync
        self.face_every = max(1, face_every)  # faces change slowly: each camera every Nth tick, staggered
        # people + faces for each camera only every Nth tick (staggered across cameras); audio stays per tick.
        # 1 live/GPU; files on a CPU use settings.vision_hz to stay well above real time.
        self.vision_every = max(1, vision_every)
        # on a CPU: people/face frames per second shared by all cameras (more cameras -> each one less often)
        self.vision_budget_fps = vision_budget_fps
        # True (files): a tick waits for the people detected in the frames the tick before handed over, so the
        # same files give the same observations. False (live): a tick never waits on the vision thread; while it is
        # still busy, the people carry over, and the cameras whose turn it was are owed the next free batch
        self.vision_wait = vision_wait
        self._vision_owed: set[str] = set()
        self.vision_busy_ticks = 0  # ticks that found the vision thread still busy (vision_wait=False)
        self._ticks = 0
        self.degraded_models = dict(degraded or {})  # stage -> reason, for models that did not load
        self.keywords = list(keywords)
        self._lock = threading.Lock()  # guards self.cameras (membership) and every camera's inbox
        self._tick_lock = threading.Lock()  # one tick at a time
        self.cameras = {c: self._new_camera(c) for c in camera_ids}
        self._latency_lock = threading.Lock()  # tick and the ASR worker both record
        self.latency: dict[str, deque] = defaultdict(lambda: deque(maxlen=2000))
        self._errors_logged: set[tuple[str, str]] = set()
        self._asr_q: queue.Queue | None = None
        self._asr_thread: threading.Thread | None = None
        # person detection runs on its own thread, overlapped with the rest of the tick (torch releases the GIL):
        # the frames a tick hands it are detected while that tick does faces, motion and audio, and their people
        # join the next tick's observations (one tick later; vision runs every few ticks per camera anyway)
        self._vision_pool = ThreadPoolExecutor(1, thread_name_prefix="vision") if detector is not None else None
        self._pending_people = None  # (future, camera ids, frame times) submitted by the last tick
        if recognizer is not None and not asr_sync:
            self._asr_q = queue.Queue(maxsize=max(2, len(camera_ids)))  # bounded: a lagging ASR skips windows
            self._asr_thread = threading.Thread(target=self._asr_worker, name="asr", daemon=True)
            self._asr_thread.start()

    # -- construction from settings, with graceful degradation --------------------------------------------------------
    @classmethod
    def from_settings(cls, camera_ids: list[str], settings, *, asr: bool = True,
                      asr_sync: bool = False, **kwargs) -> "AnalysisEngine":
        degraded: dict[str, str] = {}

        def load(stage, fn):
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - any broken model (ModelUnavailable included) degrades its stage
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.warning("analysis: %s disabled: %s", stage, reason)
                degraded[stage] = reason
                return None

        detector = load("people", lambda: people_detector(settings))
        faces = load("faces", lambda: face_detector(settings))
        import cv2

        from .people import cpu_share_threads

        cv2.setNumThreads(cpu_share_threads())  # faces, motion: OpenCV shares the cores with the other stages
        vad = load("vad", VoiceActivity)
        recognizer = load("asr", lambda: SpeechRecognizer(
            resolve_whisper(settings.whisper_model, models_dir=settings.models_dir, offline=settings.offline),
            device=settings.device)) if asr else None
        if not asr:
            degraded["asr"] = STAGE_OFF["asr"]
        vlm = None
        if settings.vlm_model:
            from .vlm import VlmAnalyzer

            vlm = load("vlm", lambda: VlmAnalyzer.from_settings(settings, camera_ids))
        else:
            degraded["vlm"] = STAGE_OFF["vlm"]
        if "vision_every" not in kwargs:  # people/faces rate per camera: configured, or auto
            from .people import resolve_device

            cpu = resolve_device(settings.device) == "cpu"
            hz = settings.vision_hz or (CPU_VISION_HZ if cpu else 0.0)
            kwargs["vision_every"] = max(1, round(settings.tick_hz / hz)) if hz else 1
            if cpu and not settings.vision_hz:
                kwargs.setdefault("vision_budget_fps", CPU_VISION_BUDGET_FPS)
        return cls(camera_ids, detector=detector, face_detector=faces, vad=vad, recognizer=recognizer, vlm=vlm,
                   keywords=settings.keywords, tick_hz=settings.tick_hz, asr_sync=asr_sync, degraded=degraded,
                   **kwargs)

    # -- input ----------------------------------------------------------------------------------------------------
    def _new_camera(self, camera_id: str) -> _Camera:
        return _Camera(camera_id, CameraTracker() if self.detector else None,
                       asr=AsrStream(list(self.keywords)) if self.recognizer else None)

    def add_camera(self, camera_id: str) -> None:
        """A camera that joined later (live mode); a no-op for one the engine already has. Any thread."""
        if camera_id in self.cameras:
            return
        cam = self._new_camera(camera_id)  # built outside the lock (ByteTrack reads its config)
        with self._lock:
            self.cameras.setdefault(camera_id, cam)  # two racing adds: the first one wins, the other is discarded

    def camera_gone(self, camera_id: str, t: float) -> None:
        """The camera's picture left at `t` (its track was unpublished, its camera left the room): it is stale from
        the next tick on, until a frame received after `t` comes, rather than after `stale_after_s` without frames.
        Any thread."""
        with self._lock:
            cam = self.cameras.get(camera_id)
            if cam is not None:
                cam.frame, cam.left, cam.left_t = None, True, t

    def submit_frame(self, camera_id: str, t: float, image: np.ndarray) -> None:
        """Put `image` in the camera's latest-frame slot (an unanalysed older frame is dropped). Any thread."""
        with self._lock:
            cam = self.cameras[camera_id]
            if t <= cam.left_t:  # received before its picture left, submitted after (a conversion in flight)
                return
            dropped = cam.frame is not None  # latest-frame slot: the older frame is dropped, never queued
            cam.left = False
            if dropped:
                cam.frames_dropped += 1
            cam.frame = (t, image)
        if dropped:
            metrics.FRAMES_DROPPED.labels(camera_id).inc()

    def submit_audio(self, camera_id: str, t: float, samples: np.ndarray) -> None:
        """Queue `samples` (starting at session time t) for the camera's next tick. Any thread."""
        with self._lock:
            cam = self.cameras[camera_id]
            cam.inbox_audio.append((t, samples))
            cam.inbox_samples += samples.size
            while len(cam.inbox_audio) > 1 and cam.inbox_samples > INBOX_AUDIO_S * SAMPLE_RATE:
                _, old = cam.inbox_audio.popleft()  # no tick for a while: keep the newest audio
                cam.inbox_samples -= old.size
                cam.audio_dropped += old.size

    def _take_audio(self, cam: _Camera, chunks) -> None:
        """Move a tick's inbox audio into the camera's analysis buffer (and its ASR stream); tick-owned state."""
        for t, samples in chunks:
            cam.audio.append((t, samples))
            cam.audio_samples += samples.size
            cam.audio_end_t = t + samples.size / SAMPLE_RATE
            if cam.asr is not None:
                cam.asr.push(samples, t)
        while cam.audio and cam.audio_end_t - cam.audio[0][0] > AUDIO_KEEP_S:
            cam.audio.popleft()

    # -- the per-tick pass ------------------------------------------------------------------------------------------
    def tick(self, t: float) -> dict[str, CameraObservation]:
        with self._tick_lock:
            return self._tick(t)

    def _tick(self, t: float) -> dict[str, CameraObservation]:
        t_tick = time.perf_counter()
        with self._lock:  # swap the inboxes out; everything below runs without the lock
            cameras = dict(self.cameras)  # snapshot: cameras added from now on join the next tick
            delivered = {}
            audio_in = {}
            for cid, c in cameras.items():
                if c.left:  # (no frame can be in its slot)
                    c.left, c.last_frame_t = False, None
                if c.frame is not None:
                    delivered[cid], c.frame = c.frame, None
                if c.inbox_audio:
                    audio_in[cid], c.inbox_audio, c.inbox_samples = c.inbox_audio, deque(), 0
        out = {cid: CameraObservation(cid, t, degraded=dict(self.degraded_models)) for cid in cameras}
        for cid, chunks in audio_in.items():
            self._guard("audio", cid, out, lambda: self._take_audio(cameras[cid], chunks))
        # the heavy vision (people, faces) runs on a staggered subset when vision_every > 1
        order = {cid: k for k, cid in enumerate(cameras)}
        every = self.vision_every
        if self.vision_budget_fps:  # each camera less often as cameras are added, within the CPU's budget
            every = max(every, math.ceil(len(cameras) * self.tick_hz / self.vision_budget_fps - 1e-9))
        vision = {cid: f for cid, f in delivered.items() if (self._ticks + order[cid]) % every == 0
                  or cameras[cid].last is None or cid in self._vision_owed}

        # faces change slowly: with vision at every tick, each camera's every `face_every` ticks (staggered)
        face_every = 1 if every > 1 else self.face_every
        faces_due = {cid for cid in vision if (self._ticks + order[cid]) % face_every == 0 or cameras[cid].last is None}
        # the cameras whose people (and, when they run on the vision thread, faces) were updated at this tick
        people, faced = self._people(cameras, vision, out, faces_due)
        for cid, (ft, img) in delivered.items():
            cam, obs = cameras[cid], out[cid]
            cam.last_frame_t = ft
            if cid not in people:
                self._carry_visuals(cam, obs, t, keep=_PEOPLE)
            if cid in faced:
                pass  # detected on the vision thread with the people
            elif cid not in vision or self._faces_on_vision:
                self._carry_visuals(cam, obs, t, keep=("faces",))
            elif cid in faces_due:
                self._guard("faces", cid, out, lambda: self._faces(img, obs))
            else:
                self._carry_visuals(cam, obs, t, keep=("faces",))
            self._guard("motion", cid, out, lambda: self._motion(cam, img, obs))
        for cid, cam in cameras.items():
            obs = out[cid]
            if cid not in delivered:
                keep = _NOT_PEOPLE if cid in people else self._VISUALS
                if cid in faced:
                    keep = tuple(k for k in keep if k != "faces")
                self._carry_visuals(cam, obs, t, keep=keep)
            self._guard("audio", cid, out, lambda: self._audio(cam, obs, t))
            if self.vlm is not None:
                self._guard("vlm", cid, out, lambda: self.vlm.observe(cid, obs, delivered.get(cid), t))
            cam.last = obs
        self._asr(cameras, t, out)
        self._ticks += 1
        self._record("tick", (time.perf_counter() - t_tick) * 1000)
        return out

    def _people(self, cameras: dict[str, _Camera], fresh, out, faces_due=()) -> tuple[set[str], set[str]]:
        """Hand this tick's `fresh` frames to the vision thread, then apply the people (and, when they run there, the
        faces) detected in the frames the last tick handed it (waiting for them if need be):
        deterministic, one tick behind. With `vision_wait` off (live) it never waits: while the vision thread is
        busy nothing is handed over or applied. A face model that is not batched looks only at the frames of
        `faces_due` (each camera every `face_every` ticks, as in the tick). Returns (cameras whose people were
        updated, cameras whose faces were)."""
        if self.detector is None:
            return set(), set()
        if not self.vision_wait and self._pending_people is not None and not self._pending_people[0].done():
            self.vision_busy_ticks += 1  # still on an earlier batch: these frames wait their turn, owed to them
            self._vision_owed.update(fresh)
            return set(), set()
        self._vision_owed.difference_update(fresh)
        done, self._pending_people = self._pending_people, None
        if fresh:
            ids = list(fresh)
            self._pending_people = (self._vision_pool.submit(self._detect, [fresh[c][1] for c in ids],
                                                             [c in faces_due for c in ids]), ids,
                                    [fresh[c][0] for c in ids])
        if done is None:
            return set(), set()
        fut, ids, times = done
        try:
            results, faces = fut.result()
        except Exception as e:  # noqa: BLE001
            for c in ids:
                if c in out:
                    self._degrade("people", c, out, e)
            return set(), set()
        updated, faced = set(), set()
        for k, (c, r, ft) in enumerate(zip(ids, results, times)):
            if c not in out:
                continue
            cam, obs = cameras[c], out[c]
            try:
                obs.people, obs.track_continuity, obs.track_age_s, obs.person_speed = cam.tracker.update(r, ft)
                updated.add(c)
            except Exception as e:  # noqa: BLE001
                self._degrade("people", c, out, e)
            if isinstance(faces, Exception):
                self._degrade("faces", c, out, faces)
            elif faces is not None and faces[k] is not None:
                obs.faces = faces[k]
                faced.add(c)
        return updated, faced

    def _detect(self, images: list, faces_due: list | None = None) -> tuple[list, list | Exception | None]:
        """Vision thread: one batch of person detections, and of faces when they run here (`_faces_on_vision`; a
        model that is not batched only on the images `faces_due` marks, None for the others; a failing face model
        degrades faces only)."""
        t0 = time.perf_counter()
        results = self.detector.detect(images)
        self._record("detect_track", (time.perf_counter() - t0) * 1000 / max(1, len(images)))
        faces = None
        if self._faces_on_vision:
            t1 = time.perf_counter()
            try:
                due = faces_due if faces_due is not None else [True] * len(images)
                faces = self.face_detector.detect_many(images) if self._faces_batched else \
                    [self.face_detector.detect(img) if d else None for img, d in zip(images, due)]
            except Exception as e:  # noqa: BLE001
                faces = e
            ran = 1 if self._faces_batched or isinstance(faces, Exception) else sum(f is not None for f in faces)
            if ran:  # per batch for a batched model, per frame otherwise (as in the tick)
                self._record("faces", (time.perf_counter() - t1) * 1000 / ran)
        return results, faces

    def _faces(self, img, obs) -> None:
        if self.face_detector is None:
            return
        t0 = time.perf_counter()
        obs.faces = self.face_detector.detect(img)
        self._record("faces", (time.perf_counter() - t0) * 1000)

    def _motion(self, cam: _Camera, img, obs) -> None:
        t0 = time.perf_counter()
        subject = obs.faces if len(obs.faces) else obs.people
        roi = subject.xyxy[int(np.argmax(subject.areas))] if len(subject) else None
        obs.motion_energy, obs.subject_motion = cam.motion.update(img, roi)
        self._record("motion", (time.perf_counter() - t0) * 1000)

    _VISUALS = ("people", "faces", "track_continuity", "track_age_s", "person_speed", "motion_energy",
                "subject_motion")

    def _carry_visuals(self, cam: _Camera, obs: CameraObservation, t: float, keep: tuple[str, ...] = _VISUALS) -> None:
        """Reuse the last read of `keep` (with its degradation); with no frame at all, mark the camera stale."""
        if keep is self._VISUALS and (cam.last_frame_t is None or t - cam.last_frame_t > self.stale_after_s):
            obs.stale = True
            since = "ever, or since its picture left" if cam.last_frame_t is None else f"{t - cam.last_frame_t:.1f} s"
            obs.degraded["video"] = f"no frames for {since}"
            return
        if cam.last is not None:
            for name in keep:
                setattr(obs, name, getattr(cam.last, name))
            for stage in ("people", "faces"):
                if stage in keep and stage in cam.last.degraded:
                    obs.degraded[stage] = cam.last.degraded[stage]

    def _audio(self, cam: _Camera, obs: CameraObservation, t: float) -> None:
        if not cam.audio or cam.audio_end_t is None or cam.audio_end_t < t - 1.0:
            obs.degraded.setdefault("audio", "no audio")
            return
        t0 = time.perf_counter()
        samples = np.concatenate([s for _, s in cam.audio])
        tick_n = int(SAMPLE_RATE / self.tick_hz)
        obs.audio_dbfs = dbfs(samples[-tick_n:])
        self._record("audio", (time.perf_counter() - t0) * 1000)
        if self.vad is not None:
            t1 = time.perf_counter()
            window = samples[-SAMPLE_RATE:]  # ~1 s of context: Silero's state restarts each call
            p = self.vad.probabilities(window)
            # speech activity over the last ~1 s: stable across the short dips between words
            obs.speech_prob = float(p.mean()) if p.size else 0.0
            obs.speaking = bool(p.size and p[-3:].max() >= 0.5)  # speech in the last ~100 ms
            obs.quiet_at = _quiet_at(p, cam.audio_end_t, 1.0 / self.tick_hz)
            obs.speech_mask = _speech_mask(p, 1.0 / self.tick_hz)
            self._record("vad", (time.perf_counter() - t1) * 1000)
        if cam.asr is not None:
            obs.keyword_hits = cam.asr.keyword_hits(t)
            obs.asr_words_per_s = cam.asr.words_per_s(t)
            obs.recent_words = tuple(cam.asr.recent(t, 2.0))
            obs.new_words = cam.asr.take_fresh()

    # -- ASR: synchronous (deterministic) or on a worker, latest-only ------------------------------------------------
    def _asr(self, cameras: dict[str, _Camera], t: float, out) -> None:
        if self.recognizer is None:
            return
        for cid in out:
            cam = cameras[cid]
            if cam.asr is None or out[cid].speech_prob < 0.3 or not cam.asr.due(t):
                continue
            if self.asr_sync:
                t0 = time.perf_counter()
                self._guard("asr", cid, out, lambda: cam.asr.run(self.recognizer, t))
                self._record("asr", (time.perf_counter() - t0) * 1000)
            else:
                try:
                    self._asr_q.put_nowait((cid, t))
                    cam.asr.last_run_t = t  # queued: not due again until hop_s later
                except queue.Full:
                    out[cid].degraded.setdefault("asr", "ASR lagging: window skipped")

    def _asr_worker(self) -> None:
        while True:
            item = self._asr_q.get()
            if item is None:
                return
            cid, t = item
            t0 = time.perf_counter()
            try:
                self.cameras[cid].asr.run(self.recognizer, t)
            except Exception as e:  # noqa: BLE001
                self._log_once("asr", cid, e)
            self._record("asr", (time.perf_counter() - t0) * 1000)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait for queued ASR work (end of a file)."""
        if self._asr_q is None:
            return
        deadline = time.time() + timeout
        while not self._asr_q.empty() and time.time() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        if self._vision_pool is not None:
            self._vision_pool.shutdown(wait=True, cancel_futures=True)
        if self._asr_q is not None:
            self._asr_q.put(None)
            self._asr_thread.join(timeout=30)
            self._asr_q = None
        if self.vlm is not None:
            self.vlm.close()

    # -- degradation --------------------------------------------------------------------------------------------------
    def _guard(self, stage: str, cid: str, out, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one failing stage must not stop the others
            self._degrade(stage, cid, out, e)

    def _degrade(self, stage: str, cid: str, out, e: Exception) -> None:
        out[cid].degraded[stage] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        metrics.DEGRADED.labels(stage, cid).inc()
        self._log_once(stage, cid, e)

    def _log_once(self, stage: str, cid: str, e: Exception) -> None:
        if (stage, cid) not in self._errors_logged:
            self._errors_logged.add((stage, cid))
            log.warning("analysis: %s failed on %s: %s (feature degraded; logged once)", stage, cid, e)

    def _record(self, stage: str, ms: float) -> None:
        with self._latency_lock:
            self.latency[stage].append(ms)
        metrics.STAGE_SECONDS.labels(stage).observe(ms / 1000.0)

    def latency_summary(self) -> dict[str, dict[str, float]]:
        with self._latency_lock:
            snapshot = {stage: list(xs) for stage, xs in self.latency.items()}
        out = {}
        for stage, xs in snapshot.items():
            if xs:
                a = np.asarray(xs)
                out[stage] = {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
                              "mean": float(a.mean()), "n": int(a.size)}
        return out

    def warm_up(self, size: tuple[int, int] = (640, 360)) -> float:
        """Run every loaded model once on a blank frame / silence, so the first real tick is not the one that pays
        for lazy initialisation (seconds on a CPU). Returns the seconds it took; latency stats are left untouched."""
        t0 = time.perf_counter()
        img = np.zeros((size[1], size[0], 3), np.uint8)
        n = max(1, len(self.cameras))  # the batch a tick sends (its shape is captured now on a GPU, not mid-session)
        for stage, fn in (("people", lambda: self.detector.detect([img] * n) if self.detector is not None else None),
                          ("faces", lambda: self.face_detector.detect(img) if self.face_detector is not None
                           else None),
                          ("vad", lambda: self.vad.probabilities(np.zeros(SAMPLE_RATE // 2, np.float32))
                           if self.vad is not None else None)):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a model that fails here degrades at its first real tick
                log.warning("analysis: warming up %s failed: %s", stage, e)
        return time.perf_counter() - t0
