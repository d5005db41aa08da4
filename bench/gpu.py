"""GPU analysis at broadcast rate (issue 14): detector, engine tick and VLM latency on one machine. Last stdout line:
one JSON object. Progress goes to stderr.

    .venv/bin/python bench/gpu.py --tiny              # CPU smoke run, ~20 s on 2 cores (tests/test_bench_gpu.py)
    python3 bench/gpu.py                              # the GPU run, < 3 min on an H100/H200

Measured, each through the project's own code (random weights, nothing downloaded):
- detect_ms[backend][B]: `PersonDetector.detect` on B frames of 640x360, one batched call, p50/p95 per call, for both
  backends: `direct` (runtime/analysis/yolo_direct.py: upload, letterbox + normalise on the device into a fixed canvas,
  batch padded to a bucket, fused fp16 network replayed as a CUDA graph, one NMS for the batch, pre + forward + NMS
  all inside the figure; the CUDA default) and `predict` (ultralytics' loop; the CPU default). B = 1, 5, 20, 100
  (`--tiny`: 1, 5). `agreement`: box counts and IoU of the two on the same frames. YOLO is `--yolo` (default
  yolo11n.yaml: the real architecture, untrained, so NMS sees random boxes, not a scene's).
- raw_fp16_ms[B] (CUDA only): the network alone, `fuse()`d, fp16, eager and as a CUDA graph: the floor.
- track_features_ms: ByteTrack (`CameraTracker.update`), motion, audio level, `scene_vector` and `TemporalState` for
  5 cameras: a room's CPU work after detection.
- tick_ms[R]: R rooms of 5 cameras, each its own `AnalysisEngine` ticking at 5 Hz against the wall clock on its own
  thread (random phases), all sharing ONE person detector through `batching.DetectionBatcher` (what
  `AnalysisEngine.from_settings` builds on CUDA), every camera analysed every tick. A room's tick: swap the inboxes;
  hand its frames to the shared detector (vision thread, one tick behind, overlapped) and take the previous tick's
  people; ByteTrack per camera; faces (CUDA: a YOLO face architecture through the direct path, batched on the vision
  thread and shared by rooms; CPU: Haar where OpenCV has cascades); motion; audio level; Silero VAD over the last 1 s
  where faster-whisper's VAD loads. p50/p95 of tick durations, ticks run / expected (a late room skips, as live does),
  frames per detector batch, process CPU cores used. R = 1, 5, 20, 50 (`--tiny`: 1, 2). Not in a tick: ASR, the VLM.
- vlm_ms[precision]: `VlmModel` (AutoProcessor + AutoModelForImageTextToText + generate) on a random LLaVA-shaped
  model built like tests/tiny_vlm.py, sized by `--vlm-size`: tiny (tests' model), small (~10M), 0.5b (CLIP ViT-B/14
  at 336 + a 24-layer 896-wide Llama, 32064-token vocabulary, ~0.5B parameters). Every read generates exactly
  `--vlm-tokens` new tokens (min_new_tokens is set: a random model would otherwise stop at random). Per precision:
  cam1 = one `answer` (p50/p95 over 5 cameras' frames), cam5_sequential = those 5 reads one after another,
  cam5_batched = `read_many` of 5 frames in ONE generate. Precisions: bf16 and nf4 (bitsandbytes) on CUDA, float32
  on a CPU. bf16_static is the analyzer's figure below when it chose bf16 with a static cache.
- vlm_analyzer: the project's path: `VlmModel` with the precision it chooses from free memory (and why), a
  `VlmAnalyzer` reading 5 cameras in one batched generate (static KV cache + compiled decode on CUDA): first call
  (compiles) and p50/p95 of later reads, per-camera read rate.
- peak_gpu_mb (overall and per stage; null on a CPU), peak_rss_mb, device name, versions, sizes used.
A stage that cannot run reports null and says why in `reasons` (never a made-up number); `--budget-s` (default 175)
skips what no longer fits, with that reason.

On a GPU machine of the `device` tool (Python 3.12, torch 2.11 + transformers 5.17 + opencv-python-headless +
onnxruntime preinstalled), carry these wheels in a git-ignored `.whl/` (pip download --no-deps --only-binary=:all:
--python-version 3.12 --implementation cp, platforms manylinux_2_17/2_24/2_28 x86_64; ~48 MB):
    ultralytics==8.4.190 ultralytics-thop==2.0.18 lap==0.5.13   (detector + ByteTrack)
    bitsandbytes==0.50.2                                          (the nf4 VLM; without it nf4 reports null)
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection   (not on that image)
    faster-whisper==1.2.1                                         (only its Silero VAD, see below; else vad null)
and run:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/gpu.py
faster-whisper's package __init__ imports ctranslate2 and av (Whisper, decoding: ~80 MB of wheels the VAD does not
use); where those are missing the bench loads `faster_whisper.vad` without the package __init__ and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false",
               "YOLO_CONFIG_DIR": str(ROOT / ".cache" / "ultralytics"), "DO_NOT_TRACK": "1",
               "MLFLOW_DISABLE_TELEMETRY": "true", "ORT_DISABLE_TELEMETRY": "1",
               "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)

import numpy as np  # noqa: E402

T0 = time.perf_counter()
FRAME_W, FRAME_H = 640, 360
CAMERAS_PER_ROOM = 5
TICK_HZ = 5.0
VLM_CAMERAS = 5

MODES = {
    "full": {"batches": [1, 5, 20, 100], "detect_reps": 20, "raw_reps": 50, "rooms": [1, 5, 20, 50],
             "seconds": {1: 3.0, 5: 3.0, 20: 4.0, 50: 5.0}, "track_reps": 30, "vlm_size": "0.5b", "vlm_tokens": 48,
             "vlm_reps": 3},
    "tiny": {"batches": [1, 5], "detect_reps": 3, "raw_reps": 5, "rooms": [1, 2], "seconds": {1: 1.2, 2: 1.2},
             "track_reps": 3, "vlm_size": "tiny", "vlm_tokens": 8, "vlm_reps": 2},
}

# random LLaVA-shaped VLMs: CLIP vision tower + Llama text model (tests/tiny_vlm.py's tokenizer and chat template)
VLM_SIZES = {
    "tiny": None,  # tests/tiny_vlm.py's model as it is
    "small": {"image": 112, "patch": 14, "v_hidden": 256, "v_inter": 1024, "v_layers": 4, "v_heads": 4,
              "t_hidden": 256, "t_inter": 688, "t_layers": 4, "t_heads": 4, "t_kv": 4, "vocab": 4096},
    "0.5b": {"image": 336, "patch": 14, "v_hidden": 768, "v_inter": 3072, "v_layers": 12, "v_heads": 12,
             "t_hidden": 896, "t_inter": 4864, "t_layers": 24, "t_heads": 14, "t_kv": 2, "vocab": 32064},
}


def log(msg: str) -> None:
    print(f"[bench/gpu {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "n": int(a.size)}


def _err(e: BaseException) -> str:
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}"[:300]


class Bench:
    def __init__(self, args):
        import torch

        self.args = args
        self.torch = torch
        self.cuda = args.device != "cpu" and torch.cuda.is_available()
        if args.device == "cuda" and not self.cuda:
            log("--device cuda asked but torch sees no CUDA device: running on the CPU")
        self.dev = "cuda:0" if self.cuda else "cpu"
        self.deadline = T0 + args.budget_s
        self.reasons: dict[str, str] = {}
        self.peak_by_stage: dict[str, float | None] = {}
        self.stage_s: dict[str, float] = {}
        self.det = None
        self.tick_includes: list[str] | None = None
        self.vlm_analyzer: dict | None = None
        self.frames = make_frames(24)

    # -- helpers ------------------------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def fits(self, key: str, need_s: float) -> bool:
        if self.left() >= need_s:
            return True
        self.reasons[key] = f"skipped: time budget (--budget-s {self.args.budget_s:g}; {max(0.0, self.left()):.0f} s " \
                            f"left, ~{need_s:.0f} s needed)"
        log(f"{key}: {self.reasons[key]}")
        return False

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def timed(self, fn, reps: int, warm: int = 1) -> list[float]:
        for _ in range(warm):
            fn()
        self.sync()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            self.sync()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    @contextlib.contextmanager
    def stage(self, name: str, peak: bool = True):
        """Times a stage; with `peak`, also its peak GPU memory (stages that hold their own peak do not nest)."""
        log(f"stage {name}")
        t0 = time.perf_counter()
        if self.cuda and peak:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        try:
            yield
        finally:
            self.stage_s[name] = round(time.perf_counter() - t0, 1)
            if peak:
                self.peak_by_stage[name] = (round(self.torch.cuda.max_memory_allocated() / 2**20, 1) if self.cuda
                                            else None)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    # -- detector -----------------------------------------------------------------------------------------------------
    def run_detect(self, batches: list[int], reps: int) -> dict | None:
        """Both backends of `PersonDetector` on the same frames: `direct` (the CUDA default: letterbox on the device,
        fp16, CUDA graphs, one NMS per batch) and `predict` (ultralytics' loop: the CPU default)."""
        from runtime.analysis.people import PersonDetector
        from runtime.models import resolve_yolo

        resolved = resolve_yolo(self.args.yolo)
        self.det = PersonDetector(resolved, device=self.dev, imgsz=self.args.imgsz)  # the project's default here
        log(f"PersonDetector {self.args.yolo} on {self.det.device}, imgsz {self.det.imgsz}, "
            f"{'fp16' if self.det.precision == 16 else 'fp32'}, default backend {self.det.backend}")
        out: dict = {"default_backend": self.det.backend}
        for backend in ("direct", "predict"):
            det = self.det if backend == self.det.backend else PersonDetector(resolved, device=self.dev,
                                                                               imgsz=self.args.imgsz, backend=backend)
            res = {}
            for b in batches:
                key = f"detect_ms.{backend}.{b}"
                if not self.fits(key, 3.0 + b * 0.05):
                    res[str(b)] = None
                    continue
                batch = [self.frames[i % len(self.frames)] for i in range(b)]
                ms = self.timed(lambda: det.detect(batch), reps, warm=3)
                s = stats(ms)
                res[str(b)] = {**s, "per_frame_ms": round(s["p50"] / b, 3),
                               "frames_per_s": round(1000 * b / s["p50"], 1)}
                log(f"detect {backend} batch {b}: p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms")
            if det.fallback_reason:
                self.reasons[f"detect_ms.{backend}"] = f"fell back to predict: {det.fallback_reason}"
            out[backend] = res
            if backend == "direct" and det._direct is not None:
                out["direct_info"] = det._direct.describe()
            # the same boxes either way: compare the first batch's detections (random weights: random but equal)
        out["agreement"] = self.agreement(resolved)
        return out

    def agreement(self, resolved) -> dict | None:
        """Box counts and mean IoU of direct vs predict on 5 frames (their resize kernels differ slightly)."""
        from runtime.analysis.people import PersonDetector

        try:
            a = PersonDetector(resolved, device=self.dev, imgsz=self.args.imgsz, backend="direct")
            b = PersonDetector(resolved, device=self.dev, imgsz=self.args.imgsz, backend="predict")
            frames = self.frames[:5]
            ra, rb = a.detect(frames), b.detect(frames)
            counts = [[len(x.boxes), len(y.boxes)] for x, y in zip(ra, rb)]
            ious = []
            for x, y in zip(ra, rb):
                bx, by = x.boxes.xyxy.cpu().numpy(), y.boxes.xyxy.cpu().numpy()
                for box in by[:20]:
                    if len(bx):
                        ious.append(float(_iou(box, bx).max()))
            return {"box_counts_direct_predict": counts, "mean_best_iou": round(float(np.mean(ious)), 3) if ious
                    else None, "boxes_compared": len(ious)}
        except Exception as e:  # noqa: BLE001
            self.reasons["detect_ms.agreement"] = _err(e)
            return None

    def run_track(self, reps: int) -> dict | None:
        """ByteTrack (`CameraTracker.update`) + motion + audio level + the feature vector, for 5 cameras: the CPU side
        of a room's tick after detection."""
        from features.observations import CameraObservation
        from features.extract import scene_vector
        from features.temporal import TemporalState
        from runtime.analysis.audio import dbfs
        from runtime.analysis.motion import MotionMeter
        from runtime.analysis.people import CameraTracker

        if self.det is None:
            self.reasons["track_features_ms"] = "the detector did not load"
            return None
        frames = self.frames[:CAMERAS_PER_ROOM]
        results = self.det.detect(frames)
        trackers = [CameraTracker() for _ in frames]
        meters = [MotionMeter() for _ in frames]
        audio = (0.01 * np.random.default_rng(2).standard_normal(3200)).astype(np.float32)
        temporal = TemporalState()
        ids = [f"cam{i}" for i in range(len(frames))]
        k = [0]

        def step():
            k[0] += 1
            t = k[0] / TICK_HZ
            rows = []
            for i, (r, f) in enumerate(zip(results, frames)):
                obs = CameraObservation(ids[i], t)
                obs.people, obs.track_continuity, obs.track_age_s, obs.person_speed = trackers[i].update(r, t)
                obs.motion_energy, obs.subject_motion = meters[i].update(f, None)
                obs.audio_dbfs = dbfs(audio)
                rows.append(scene_vector(obs))
            temporal.update(t, 1 / TICK_HZ, ids, np.stack(rows), [0] * len(ids), [False] * len(ids),
                            [False] * len(ids))

        s = stats(self.timed(step, reps, warm=3))
        log(f"track + features, 5 cameras: p50 {s['p50']:.2f} ms")
        return {**s, "cameras": CAMERAS_PER_ROOM, "includes": ["CameraTracker.update (ByteTrack)", "MotionMeter",
                                                                "audio level", "scene_vector", "TemporalState"],
                "people_per_frame": [len(r.boxes) for r in results]}

    def letterbox_shape(self) -> tuple[int, int]:
        """(H, W) that ultralytics' rect letterbox gives a 640x360 frame at the detector's imgsz (stride 32)."""
        r = self.det.imgsz / max(FRAME_W, FRAME_H)
        return (int(math.ceil(round(FRAME_H * r) / 32) * 32), int(math.ceil(round(FRAME_W * r) / 32) * 32))

    def run_raw(self, batches: list[int], reps: int) -> dict | None:
        import copy

        torch = self.torch
        if not self.cuda:
            self.reasons["raw_fp16_ms"] = "no CUDA device: the raw fp16 forward is a GPU comparison"
            return None
        if self.det is None:
            self.reasons["raw_fp16_ms"] = "the detector did not load"
            return None
        net = copy.deepcopy(self.det.model.model).to(self.dev).float().eval()
        net = net.fuse(verbose=False)
        net = net.half()
        h, w = self.letterbox_shape()
        out = {"input_hw": [h, w]}
        for b in batches:
            key = f"raw_fp16_ms.{b}"
            if not self.fits(key, 3.0):
                out[str(b)] = None
                continue
            x = torch.randn(b, 3, h, w, device=self.dev, dtype=torch.half)
            with torch.no_grad():
                eager = stats(self.timed(lambda: net(x), reps, warm=3))
                graph = None
                try:
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(3):
                            net(x)
                    torch.cuda.current_stream().wait_stream(s)
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        net(x)
                    graph = stats(self.timed(g.replay, reps, warm=3))
                    del g
                except Exception as e:  # noqa: BLE001
                    self.reasons[f"raw_fp16_ms.{b}.cuda_graph"] = _err(e)
            out[str(b)] = {"eager": eager, "cuda_graph": graph}
            log(f"raw fp16 batch {b}: eager p50 {eager['p50']:.2f} ms, graph "
                f"{graph['p50'] if graph else None} ms")
        del net
        self.free()
        return out

    # -- engine tick ----------------------------------------------------------------------------------------------
    def load_faces(self):
        from runtime.analysis.faces import make_face_detector

        try:
            return make_face_detector("haar", device=self.dev)
        except Exception as e:  # noqa: BLE001 - e.g. opencv-python-headless without CascadeClassifier
            self.reasons["tick.faces"] = f"faces not in the tick: {_err(e)}"
            return None

    def load_vad(self):
        from runtime.analysis.audio import VoiceActivity

        try:
            return VoiceActivity()
        except ImportError as e:
            # faster_whisper/__init__ imports ctranslate2 and av (Whisper, decoding); its Silero VAD needs neither
            spec = importlib.util.find_spec("faster_whisper")
            if spec is None or not spec.submodule_search_locations:
                self.reasons["tick.vad"] = f"VAD not in the tick: faster-whisper missing ({_err(e)})"
                return None
            for name in [m for m in sys.modules if m == "faster_whisper" or m.startswith("faster_whisper.")]:
                del sys.modules[name]
            sys.modules["faster_whisper"] = importlib.util.module_from_spec(spec)  # the package, __init__ not run
            try:
                vad = VoiceActivity()
            except Exception as e2:  # noqa: BLE001
                self.reasons["tick.vad"] = f"VAD not in the tick: {_err(e)}; without the package __init__: {_err(e2)}"
                return None
            self.reasons["tick.vad_note"] = (f"faster_whisper.vad loaded without the package __init__ ({_err(e)}); "
                                             "the Silero VAD itself is the project's path")
            return vad
        except Exception as e:  # noqa: BLE001
            self.reasons["tick.vad"] = f"VAD not in the tick: {_err(e)}"
            return None

    def load_gpu_faces(self):
        """On CUDA: a YOLO face model through the batched direct path (random weights of `--face-yolo`'s architecture:
        no face weights ship offline; the speed is the architecture's), shared by every room like the person
        detector. On a CPU: Haar, per camera, as the project runs there."""
        from runtime.analysis.batching import DetectionBatcher
        from runtime.analysis.faces import YoloFaceDetector

        if not self.cuda:
            return self.load_faces(), "Haar per camera every 2nd tick (staggered)"
        try:
            fd = YoloFaceDetector(self.args.face_yolo, device=self.dev)
            self.faces_prepare_s = round(fd._direct.prepare((FRAME_H, FRAME_W)), 2)
            return DetectionBatcher(fd, max_wait_ms=self.args.batch_wait_ms, method="detect_many"), \
                f"YOLO faces ({self.args.face_yolo}, random weights) batched on the vision thread, shared by rooms"
        except Exception as e:  # noqa: BLE001
            self.reasons["tick.faces"] = f"GPU faces not in the tick: {_err(e)}"
            return None, None

    def run_tick(self, rooms: list[int], seconds: dict[int, float]) -> dict | None:
        """R rooms of 5 cameras, each its own `AnalysisEngine` ticking at 5 Hz on its own thread against the wall
        clock (clocks at random phases, as independent rooms are), all sharing one person detector through a
        `DetectionBatcher` (what `AnalysisEngine.from_settings` does on CUDA). A tick that ends after the next one was
        due makes the room skip to the current time, as live does: the skipped ticks are counted."""
        import threading

        from runtime.analysis.batching import DetectionBatcher
        from runtime.analysis.engine import AnalysisEngine
        from runtime.media import SAMPLE_RATE

        if self.det is None:
            self.reasons["tick_ms"] = "the detector did not load"
            return None
        vad0 = self.load_vad()
        faces, faces_how = self.load_gpu_faces()
        batcher = DetectionBatcher(self.det, max_wait_ms=self.args.batch_wait_ms)
        t0 = time.perf_counter()
        for b in (1, 2, 5, 10, 20, 50, 100, 200):  # capture every batch shape before the clock starts
            if self.cuda or b <= 5:
                self.det.detect([self.frames[i % len(self.frames)] for i in range(b)])
        warm_s = round(time.perf_counter() - t0, 2)
        self.tick_includes = (["swap inboxes", "people: the room's frames to the shared DetectionBatcher (one batched "
                               "detect with every room's frames arriving within the deadline; vision thread, one tick "
                               "behind, overlapped)", "CameraTracker.update (ByteTrack) per camera"]
                              + ([faces_how] if faces is not None else [])
                              + ["motion per camera", "audio level per camera"]
                              + (["Silero VAD over the last 1 s per camera (one VAD per room)"] if vad0 else []))
        n_audio = int(SAMPLE_RATE / TICK_HZ)
        rng = np.random.default_rng(1)
        noise = (0.01 * rng.standard_normal(SAMPLE_RATE * 4)).astype(np.float32)
        out = {"detector_warm_up_s": warm_s, "faces_warm_up_s": getattr(self, "faces_prepare_s", None),
               "batch_wait_ms": self.args.batch_wait_ms}
        for rooms_n in rooms:
            key = f"tick_ms.{rooms_n}"
            secs = seconds.get(rooms_n, 4.0)
            if not self.fits(key, secs + 4.0 + rooms_n * 0.1):
                out[str(rooms_n)] = None
                continue
            vads = [self.load_vad() if vad0 else None for _ in range(rooms_n)]
            engines = [AnalysisEngine([f"r{r}c{c}" for c in range(CAMERAS_PER_ROOM)], detector=batcher,
                                      face_detector=faces, vad=vads[r], recognizer=None, vlm=None, tick_hz=TICK_HZ,
                                      vision_every=1) for r in range(rooms_n)]
            tick_ms: list[list[float]] = [[] for _ in engines]
            late_ms: list[list[float]] = [[] for _ in engines]
            skipped = [0] * rooms_n
            expected = [0] * rooms_n
            obs_last: list[dict] = [{} for _ in engines]
            b0 = (batcher.batches, batcher.frames)
            batcher.batch_frames.clear()
            start = time.perf_counter() + 0.5
            phases = np.random.default_rng(rooms_n).uniform(0, 1 / TICK_HZ, rooms_n)
            warm_ticks = 3

            def room(r: int) -> None:
                eng, k, first = engines[r], 0, start + phases[r]
                end = first + warm_ticks / TICK_HZ + secs
                while True:
                    due = first + k / TICK_HZ
                    if due >= end:
                        break
                    now = time.perf_counter()
                    if now < due:
                        time.sleep(due - now)
                    t = k / TICK_HZ
                    for i, c in enumerate(eng.cameras):
                        eng.submit_frame(c, t, self.frames[(3 * k + 7 * i + r) % len(self.frames)])
                        off = (k * n_audio + 997 * i + 131 * r) % (noise.size - n_audio)
                        eng.submit_audio(c, t, noise[off:off + n_audio])
                    t1 = time.perf_counter()
                    obs_last[r] = eng.tick(t)
                    t2 = time.perf_counter()
                    if k >= warm_ticks:
                        tick_ms[r].append((t2 - t1) * 1000)
                        late_ms[r].append((t1 - due) * 1000)
                        expected[r] += 1
                    nxt = int((t2 - first) * TICK_HZ) + 1  # the next tick not already past: skip, never burst
                    if k >= warm_ticks:
                        skipped[r] += max(0, nxt - k - 1)
                        expected[r] += max(0, nxt - k - 1)
                    k = max(k + 1, nxt)

            threads = [threading.Thread(target=room, args=(r,), daemon=True) for r in range(rooms_n)]
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
            for eng in engines:
                eng.close()
            lat: dict[str, list[float]] = {}
            for eng in engines:
                with eng._latency_lock:
                    for stage, xs in eng.latency.items():
                        lat.setdefault(stage, []).extend(xs)
            all_ms = [x for xs in tick_ms for x in xs]
            all_late = [x for xs in late_ms for x in xs]
            run, exp = sum(len(x) for x in tick_ms), sum(expected)
            s = stats(all_ms) if all_ms else {"p50": None, "p95": None, "n": 0}
            batching = batcher.describe()  # batch sizes of this room count's run (cleared before it)
            out[str(rooms_n)] = {
                "cameras": rooms_n * CAMERAS_PER_ROOM, **s, "ticks_run": run, "ticks_expected": exp,
                "ticks_run_share": round(run / exp, 4) if exp else None, "ticks_skipped": sum(skipped),
                "start_late_ms": stats(all_late) if all_late else None,
                "fits_5hz_p95": bool(all_ms) and s["p95"] < 1000 / TICK_HZ,
                "p95_under_100ms": bool(all_ms) and s["p95"] < 100,
                "stage_p50_ms": {k: round(float(np.percentile(v, 50)), 3) for k, v in sorted(lat.items())
                                 if v and k != "tick"},
                "detect_batches": batcher.batches - b0[0], "detect_frames": batcher.frames - b0[1],
                "frames_per_batch_p50": batching["frames_per_batch_p50"],
                "frames_per_batch_max": batching["frames_per_batch_max"],
                "process_cpu_cores_used": round(cpu_s / wall_s, 2) if wall_s else None,
                "people_last_tick": sum(len(o.people) for d in obs_last for o in d.values()),
                "degraded_stages": sorted({st for d in obs_last for o in d.values() for st in o.degraded})}
            log(f"tick {rooms_n} room(s): p50 {s['p50']} ms, p95 {s['p95']} ms, run {run}/{exp}, "
                f"{out[str(rooms_n)]['frames_per_batch_p50']} frames/batch, {out[str(rooms_n)]['process_cpu_cores_used']}"
                f" cores")
        batcher.close()
        if isinstance(faces, DetectionBatcher):
            faces.close()
        return out

    # -- VLM ----------------------------------------------------------------------------------------------------------
    def build_vlm(self, target: Path, size: str, tokens: int) -> tuple[Path, dict]:
        """A random LLaVA-shaped model dir (bf16 on CUDA, float32 on a CPU); returns (dir, sizes)."""
        import torch
        from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                                  LlavaForConditionalGeneration, LlavaProcessor)

        from tests.tiny_vlm import build_tiny_vlm

        base = build_tiny_vlm(target / "tiny")
        spec = VLM_SIZES[size]
        if spec is None:
            path = base
        else:
            tiny = LlavaProcessor.from_pretrained(base)
            tok = tiny.tokenizer
            processor = LlavaProcessor(
                image_processor=CLIPImageProcessor(size={"shortest_edge": spec["image"]},
                                                   crop_size={"height": spec["image"], "width": spec["image"]}),
                tokenizer=tok, patch_size=spec["patch"], vision_feature_select_strategy="default",
                chat_template=tiny.chat_template, image_token="<image>", num_additional_image_tokens=1)
            config = LlavaConfig(
                vision_config=CLIPVisionConfig(hidden_size=spec["v_hidden"], intermediate_size=spec["v_inter"],
                                               num_hidden_layers=spec["v_layers"],
                                               num_attention_heads=spec["v_heads"], image_size=spec["image"],
                                               patch_size=spec["patch"]),
                # a vocabulary as wide as a real VLM's (the logits are part of every decode step); ids past the
                # tokenizer's 320 decode to nothing
                text_config=LlamaConfig(vocab_size=max(len(tok), spec["vocab"]), hidden_size=spec["t_hidden"],
                                        intermediate_size=spec["t_inter"], num_hidden_layers=spec["t_layers"],
                                        num_attention_heads=spec["t_heads"], num_key_value_heads=spec["t_kv"],
                                        max_position_embeddings=4096),
                image_token_index=tok.convert_tokens_to_ids("<image>"),
                vision_feature_select_strategy="default", vision_feature_layer=-1)
            torch.manual_seed(0)
            with torch.device(self.dev):  # random init on the GPU: seconds instead of a minute for 0.5B
                model = LlavaForConditionalGeneration(config)
            model = model.to(torch.bfloat16 if self.cuda else torch.float32)
            path = target / size
            model.save_pretrained(path)
            processor.save_pretrained(path)
            del model
            self.free()
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        v, tc = cfg.vision_config, cfg.text_config
        from runtime.analysis.vlm import vlm_param_count

        params = vlm_param_count(str(path))
        return path, {"size": size, "params": params, "params_m": round(params / 1e6, 3) if params else None,
                      "image": v.image_size, "patch": v.patch_size,
                      "vision": f"{v.num_hidden_layers}x{v.hidden_size}", "text": f"{tc.num_hidden_layers}x"
                      f"{tc.hidden_size}", "vocab": tc.vocab_size, "new_tokens": tokens}

    def load_vlm(self, path: Path, precision: str, tokens: int):
        from runtime.analysis.vlm import VlmModel

        vm = VlmModel(str(path), device=self.dev, four_bit=precision == "nf4", max_new_tokens=tokens)
        vm.model.generation_config.min_new_tokens = tokens  # a fixed amount of work per read
        counts: list[tuple[int, int]] = []  # (batch, new tokens) of every generate call
        generate = vm.model.generate

        def counting(*a, **k):
            out = generate(*a, **k)
            n_in = k["input_ids"].shape[1] if "input_ids" in k else 0
            counts.append((int(out.shape[0]), int(out.shape[1] - n_in)))
            return out

        vm.model.generate = counting
        return vm, counts

    def run_analyzer(self, path: Path, tokens: int, reps: int) -> dict:
        from features.observations import CameraObservation
        from runtime.analysis.vlm import VlmAnalyzer, VlmModel

        t0 = time.perf_counter()
        vm = VlmModel(str(path), device=self.dev, max_new_tokens=tokens)  # precision: its own choice
        vm.model.generation_config.min_new_tokens = tokens
        load_s = round(time.perf_counter() - t0, 1)
        cams = [f"cam{i}" for i in range(VLM_CAMERAS)]
        an = VlmAnalyzer(vm, cams, start=False)
        k = [0]

        def feed():
            k[0] += 1
            for i, c in enumerate(cams):
                an.observe(c, CameraObservation(c, float(k[0])), (float(k[0]), self.frames[(i + k[0]) % 24]),
                           float(k[0]))

        feed()
        t0 = time.perf_counter()
        an.read_due()
        first = (time.perf_counter() - t0) * 1000

        def step():
            feed()
            an.read_due()

        ms = self.timed(step, reps, warm=1)
        res = {"precision": vm.precision, "precision_reason": vm.precision_reason, "load_s": load_s,
               "static_cache": an.static_cache and an.static_cache_error is None,
               "static_cache_error": an.static_cache_error, "first_call_ms": round(first, 1),
               "cam5_batched": {**stats(ms), "per_camera_ms": round(float(np.percentile(ms, 50)) / VLM_CAMERAS, 1),
                                "camera_read_hz": round(1000 / float(np.percentile(ms, 50)), 2)},
               "batch_sizes": sorted(set(an.batch_sizes))}
        log(f"VLM analyzer ({vm.precision}, static {res['static_cache']}): first {first:.0f} ms, 5 cameras p50 "
            f"{res['cam5_batched']['p50']:.0f} ms")
        an.close()
        del vm, an
        self.free()
        return res

    def run_vlm(self, size: str, tokens: int, reps: int) -> tuple[dict | None, dict | None]:
        tmp = Path(tempfile.mkdtemp(prefix="aiobs-bench-vlm-"))
        try:
            return self._run_vlm(tmp, size, tokens, reps)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_vlm(self, tmp: Path, size: str, tokens: int, reps: int) -> tuple[dict | None, dict | None]:
        t0 = time.perf_counter()
        with self.stage("vlm_build"):
            path, sizes = self.build_vlm(tmp, size, tokens)
        sizes["build_s"] = round(time.perf_counter() - t0, 1)
        log(f"VLM {size} built in {sizes['build_s']} s: {sizes}")
        frames = self.frames[:VLM_CAMERAS]
        precisions = ["bf16", "nf4"] if self.cuda else ["float32"]
        out: dict[str, dict | None] = {p: None for p in ("float32", "bf16", "nf4", "bf16_static")}
        if self.cuda:
            self.reasons["vlm_ms.float32"] = "CUDA: bf16 and nf4 are measured instead"
        else:
            for p in ("bf16", "nf4", "bf16_static"):
                self.reasons[f"vlm_ms.{p}"] = "no CUDA device (on a CPU only float32 is measured)"
        for prec in precisions:
            key = f"vlm_ms.{prec}"
            if prec == "nf4":
                try:
                    import bitsandbytes  # noqa: F401
                except Exception as e:  # noqa: BLE001
                    self.reasons[key] = f"bitsandbytes not importable: {_err(e)}"
                    continue
            if not self.fits(key, 20.0 if size == "0.5b" else 3.0):
                continue
            try:
                with self.stage(f"vlm_{prec}"):
                    t0 = time.perf_counter()
                    vm, counts = self.load_vlm(path, prec, tokens)
                    load_s = round(time.perf_counter() - t0, 1)
                    res = {"load_s": load_s,
                           "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in vm.model.parameters()}),
                           "prompt_tokens": int(vm.processor(images=[frames[0]], text=[vm.prompt],
                                                             return_tensors="pt")["input_ids"].shape[1])}
                    vm.answer(frames[0])  # warm-up
                    single = []
                    for f in frames:
                        t1 = time.perf_counter()
                        vm.answer(f)
                        self.sync()
                        single.append((time.perf_counter() - t1) * 1000)
                    res["cam1"] = stats(single)
                    res["cam5_sequential_ms"] = round(sum(single), 1)
                    ts = [float(i) for i in range(len(frames))]
                    batched = self.timed(lambda: vm.read_many(frames, ts), reps, warm=1)
                    res["cam5_batched"] = {**stats(batched),
                                           "per_camera_ms": round(float(np.percentile(batched, 50)) / len(frames), 1)}
                    res["generate_calls_batch_new_tokens"] = sorted(set(counts))
                    out[prec] = res
                    log(f"VLM {prec}: cam1 p50 {res['cam1']['p50']:.0f} ms, 5 sequential "
                        f"{res['cam5_sequential_ms']:.0f} ms, 5 batched p50 {res['cam5_batched']['p50']:.0f} ms")
                    del vm
                    self.free()
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.reasons[key] = _err(e)
                vm = None  # noqa: F841 - let the next precision load into freed memory
                self.free()
        # the project's path: VlmModel with the precision it chooses here, VlmAnalyzer reading 5 cameras in one batch
        # (static KV cache + compiled decode on CUDA, padded to a fixed batch)
        if self.fits("vlm_analyzer", 60.0 if size == "0.5b" else 10.0):
            try:
                with self.stage("vlm_analyzer"):
                    self.vlm_analyzer = self.run_analyzer(path, tokens, reps)
                if self.cuda and self.vlm_analyzer["precision"] == "bf16" and self.vlm_analyzer["static_cache"]:
                    out["bf16_static"] = {"first_call_ms": self.vlm_analyzer["first_call_ms"],
                                          "cam5_batched": self.vlm_analyzer["cam5_batched"]}
                elif self.cuda:
                    self.reasons["vlm_ms.bf16_static"] = (f"the analyzer chose {self.vlm_analyzer['precision']}, static "
                                                          f"cache {self.vlm_analyzer['static_cache']}")
            except Exception as e:  # noqa: BLE001
                traceback.print_exc()
                self.reasons["vlm_analyzer"] = _err(e)
                self.free()
        if self.cuda and out["bf16_static"] is None:
            self.reasons.setdefault("vlm_ms.bf16_static", "the analyzer did not run")
        return out, sizes


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def make_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Synthetic 640x360 RGB frames (gradient, three moving upright blocks, noise): the same input on every machine
    (the sample videos and their decoder are not on the GPU machine; random weights do not care what they see)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    base = np.stack([xx * 255 // FRAME_W, yy * 255 // FRAME_H, (xx + yy) * 255 // (FRAME_W + FRAME_H)],
                    -1).astype(np.int16)
    frames = []
    for i in range(n):
        f = base.copy()
        for j in range(3):
            x, y = (i * 9 + j * 190) % (FRAME_W - 60), 60 + 50 * j
            f[y:y + 150, x:x + 50] = (200 - 50 * j, 80 + 40 * j, 60)
        f += rng.integers(-12, 13, f.shape, dtype=np.int16)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", "--quick", action="store_true", help="everything small: a CPU smoke run in ~20 s")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--yolo", default="yolo11n.yaml", help="YOLO .yaml (untrained architecture) or a local .pt")
    p.add_argument("--imgsz", type=int, default=0,
                   help="detector input size; 0 = the project's auto (640 on CUDA, 320 on a CPU)")
    p.add_argument("--batches", help="detect batch sizes, e.g. 1,5,20,100")
    p.add_argument("--rooms", help="engine rooms of 5 cameras, e.g. 1,5,20")
    p.add_argument("--vlm-size", choices=tuple(VLM_SIZES), help="random VLM size (default: 0.5b, tiny with --tiny)")
    p.add_argument("--vlm-tokens", type=int, help="new tokens per VLM read (default 48, 8 with --tiny)")
    p.add_argument("--stages", default="detect,raw,track,tick,vlm", help="which stages to run (comma list)")
    p.add_argument("--face-yolo", default="yolo11n.yaml", help="the architecture of the GPU face model in the tick")
    p.add_argument("--batch-wait-ms", type=float, default=4.0, help="the shared detector's batching deadline")
    p.add_argument("--budget-s", type=float, default=175.0, help="stages that no longer fit are skipped, with reason")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    mode = MODES["tiny" if args.tiny else "full"]
    batches = [int(x) for x in args.batches.split(",")] if args.batches else mode["batches"]
    rooms = [int(x) for x in args.rooms.split(",")] if args.rooms else mode["rooms"]
    vlm_size = args.vlm_size or mode["vlm_size"]
    tokens = args.vlm_tokens or mode["vlm_tokens"]
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    import torch

    bench = Bench(args)
    result: dict = {
        "bench": "gpu", "mode": "tiny" if args.tiny else "full", "device": bench.dev,
        "device_name": (torch.cuda.get_device_name(0) if bench.cuda
                        else f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"),
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": bench.cuda, "transformers": _version("transformers"), "ultralytics": _version("ultralytics"),
        "bitsandbytes": _version("bitsandbytes"), "onnxruntime": _version("onnxruntime"),
        "sizes": {"frame": f"{FRAME_W}x{FRAME_H}", "yolo": args.yolo, "detect_batches": batches,
                  "detect_reps": mode["detect_reps"], "rooms": rooms, "cameras_per_room": CAMERAS_PER_ROOM,
                  "tick_hz": TICK_HZ, "room_seconds": {str(r): mode["seconds"].get(r, 4.0) for r in rooms},
                  "vlm_cameras": VLM_CAMERAS},
        "detect_ms": None, "raw_fp16_ms": None, "track_features_ms": None, "tick_ms": None, "tick_includes": None,
        "vlm_ms": None, "vlm_analyzer": None,
    }
    if stages & {"detect", "tick", "raw", "track"}:
        try:
            with bench.stage("detect"):
                det = bench.run_detect(batches if "detect" in stages else [], mode["detect_reps"])
                if "detect" in stages:
                    result["detect_ms"] = det
                result["sizes"]["detect_imgsz"] = bench.det.imgsz
                result["sizes"]["detect_precision"] = "fp16" if bench.det.precision == 16 else "fp32"
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            bench.reasons["detect_ms"] = _err(e)
    if "detect" not in stages:
        bench.reasons.setdefault("detect_ms", "not asked (--stages)")
    if "raw" in stages:
        try:
            with bench.stage("raw_fp16"):
                result["raw_fp16_ms"] = bench.run_raw(batches, mode["raw_reps"])
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            bench.reasons["raw_fp16_ms"] = _err(e)
    else:
        bench.reasons["raw_fp16_ms"] = "not asked (--stages)"
    if "track" in stages:
        try:
            with bench.stage("track", peak=False):
                result["track_features_ms"] = bench.run_track(mode["track_reps"])
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            bench.reasons["track_features_ms"] = _err(e)
    else:
        bench.reasons["track_features_ms"] = "not asked (--stages)"
    if "tick" in stages:
        try:
            with bench.stage("tick"):
                result["tick_ms"] = bench.run_tick(rooms, mode["seconds"])
                result["tick_includes"] = bench.tick_includes
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            bench.reasons["tick_ms"] = _err(e)
    else:
        bench.reasons["tick_ms"] = "not asked (--stages)"
    if "vlm" in stages:
        try:
            with bench.stage("vlm", peak=False):
                result["vlm_ms"], result["sizes"]["vlm"] = bench.run_vlm(vlm_size, tokens, mode["vlm_reps"])
            result["vlm_analyzer"] = bench.vlm_analyzer
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            bench.reasons["vlm_ms"] = _err(e)
    else:
        bench.reasons["vlm_ms"] = "not asked (--stages)"
    peaks = [v for v in bench.peak_by_stage.values() if v is not None]
    result["peak_gpu_mb"] = max(peaks) if bench.cuda and peaks else None
    result["peak_gpu_mb_by_stage"] = bench.peak_by_stage if bench.cuda else None
    if not bench.cuda:
        bench.reasons["peak_gpu_mb"] = "no CUDA device"
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["stage_s"] = bench.stage_s
    result["wall_s"] = round(time.perf_counter() - T0, 1)
    result["reasons"] = bench.reasons
    return result


if __name__ == "__main__":
    with contextlib.redirect_stdout(sys.stderr):  # libraries' prints must not land after the JSON line
        res = main()
    log(f"done in {res['wall_s']} s")
    print(json.dumps(res), flush=True)
