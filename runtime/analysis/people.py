"""People: one YOLO forward for all cameras of a tick, then one ByteTrack state per camera.

`PersonDetector.detect(frames)` runs one batched detection of all frames and keeps only person classes (class 'person'
for COCO models; every class for person-only models such as the packaged Normal/Fall model). Two backends, same
results: `predict` (ultralytics' own loop: the CPU default) and `direct` (`yolo_direct.DirectYolo`: letterbox on the
device, fp16, CUDA graphs, one NMS per batch: the CUDA default). If the direct path fails it falls back to predict for
good and says why (`fallback_reason`). Many rooms share one detector through `batching.DetectionBatcher`.
`CameraTracker.update(...)` feeds that camera's boxes to its own BYTETracker and derives track continuity, the age of
the oldest live track and the mean speed of tracked people.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from features.observations import Detections
from runtime.media import usable_cores
from runtime.models import ResolvedModel

log = logging.getLogger(__name__)

PREDICT_CONF = 0.1  # boxes kept for the tracker (ByteTrack splits them into high/low itself)
DIRECT_FAILURES_TO_FALL_BACK = 3


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def cpu_share_threads() -> int:
    """Threads for one CPU-heavy library (torch, OpenCV) running beside the decoders, the other analysis stages and
    the encoder: half the cores, 1 on a 2-core machine. A library taking every core spins its idle workers against
    the threads that feed it and gets slower, not faster."""
    return max(1, usable_cores() // 2)


def import_ultralytics() -> None:
    """Import Ultralytics with its log on stderr. It logs to the stdout it finds when it is first imported (a
    settings banner on a fresh data dir, among others), and stdout is the CLI's own output (`aiobs live` prints its
    report there, `bench/live.py` reads it)."""
    import contextlib
    import sys

    if "ultralytics" not in sys.modules:
        with contextlib.redirect_stdout(sys.stderr):
            import ultralytics  # noqa: F401


class PersonDetector:
    def __init__(self, model: ResolvedModel, device: str = "auto", imgsz: int = 0, conf: float = 0.25,
                 backend: str = "auto"):
        import_ultralytics()
        from ultralytics import YOLO

        self.resolved = model
        self.model = YOLO(model.target, task="detect")
        self.device = resolve_device(device)
        self.precision = 16 if self.device.startswith("cuda") else 32  # fp16 on CUDA
        if self.device == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
            import torch

            # process-wide: on a CPU the detector shares the cores with decoding, audio and encoding (a 2-core box:
            # one thread, as fast per frame as two and without their spinning)
            torch.set_num_threads(min(torch.get_num_threads(), cpu_share_threads()))
        self.imgsz = imgsz or (640 if self.device.startswith("cuda") else 320)  # CPU: 320 keeps a 5-camera tick
        self.conf = conf
        names = self.model.names  # {id: name}
        person = [i for i, n in names.items() if str(n).lower() == "person"]
        if not person and len(names) == 80 and all(str(n) == str(i) for i, n in names.items()):
            person = [0]  # an untrained COCO-shaped model (.yaml): class 0 is 'person' once trained
        self.classes = person or None  # None = all classes are people (person-only model)
        if not person:
            log.info("YOLO %s has no 'person' class (%s): every class counts as a person",
                     model.target, list(names.values())[:5])
        if backend not in ("auto", "predict", "direct"):
            raise ValueError(f"detector backend {backend!r}: expected auto, predict or direct")
        self.backend = ("direct" if self.device.startswith("cuda") else "predict") if backend == "auto" else backend
        self.fallback_reason: str | None = None
        self._direct_failures = 0
        self._direct = None
        if self.backend == "direct":
            from .yolo_direct import DirectYolo

            self._direct = DirectYolo(self.model, self.device, self.imgsz, conf=PREDICT_CONF, classes=self.classes,
                                      half=self.precision == 16)

    def detect(self, frames_rgb: list[np.ndarray]) -> list:
        """One batched detection; returns ultralytics Results (one per frame, input order)."""
        if not frames_rgb:
            return []
        if self._direct is not None:
            try:
                out = self._direct.detect(frames_rgb)
                self._direct_failures = 0
                return out
            except Exception as e:  # noqa: BLE001 - predict does the same job, slower: this call, and for good
                self._direct_failures += 1  # after DIRECT_FAILURES_TO_FALL_BACK in a row (a transient error is not)
                reason = f"{type(e).__name__}: {str(e)[:200]}"
                if self._direct_failures >= DIRECT_FAILURES_TO_FALL_BACK:
                    self.fallback_reason = reason
                    log.warning("people: the direct detector failed %d times in a row (%s); ultralytics predict from "
                                "now on", self._direct_failures, reason)
                    self._direct, self.backend = None, "predict"
                else:
                    log.warning("people: the direct detector failed (%s); this batch through predict", reason)
        return self._predict(frames_rgb)

    def _predict(self, frames_rgb: list[np.ndarray]) -> list:
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames_rgb]
        return self.model.predict(bgr, imgsz=self.imgsz, conf=PREDICT_CONF, classes=self.classes, device=self.device,
                                  quantize=self.precision, verbose=False)


def bytetrack_args():
    import_ultralytics()
    from ultralytics.utils import IterableSimpleNamespace, YAML
    from ultralytics.utils.checks import check_yaml

    return IterableSimpleNamespace(**YAML.load(check_yaml("bytetrack.yaml")))


class CameraTracker:
    """ByteTrack state for one camera, plus the track bookkeeping the features need."""

    def __init__(self):
        import_ultralytics()
        from ultralytics.trackers.byte_tracker import BYTETracker

        args = bytetrack_args()
        self._tracker = BYTETracker(args)
        self._first_seen: dict[int, float] = {}
        self._last_center: dict[int, tuple[float, np.ndarray]] = {}
        self._prev_ids: set[int] = set()

    def update(self, result, t: float, min_conf: float = 0.25) -> tuple[Detections, float, float, float]:
        """(tracked people, continuity, oldest track age s, mean speed in frame-widths/s)."""
        h, w = result.orig_shape
        boxes = result.boxes.cpu().numpy()
        tracks = self._tracker.update(boxes, result.orig_img)
        people = Detections.from_bytetrack(tracks, w, h)
        if len(people):
            keep = people.confidence >= min_conf * 0.5  # ByteTrack already filtered; drop only the faintest
            people = Detections(people.xyxy[keep], people.confidence[keep], people.track_id[keep],
                                people.class_id[keep])
        ids = set(int(i) for i in people.track_id)
        continuity = len(ids & self._prev_ids) / len(self._prev_ids) if self._prev_ids else (1.0 if ids else 0.0)
        self._prev_ids = ids
        for i in ids:
            self._first_seen.setdefault(i, t)
        for gone in [i for i in self._first_seen if i not in ids and i not in self._tracked_ids()]:
            self._first_seen.pop(gone, None)
            self._last_center.pop(gone, None)
        age = max((t - self._first_seen[i] for i in ids), default=0.0)
        speeds = []
        for i, c in zip(people.track_id, people.centers):
            prev = self._last_center.get(int(i))
            if prev is not None and t > prev[0]:
                speeds.append(float(np.hypot(*(c - prev[1]))) / (t - prev[0]))
            self._last_center[int(i)] = (t, c)
        return people, float(continuity), float(age), float(np.mean(speeds)) if speeds else 0.0

    def _tracked_ids(self) -> set[int]:
        return {int(s.track_id) for s in self._tracker.tracked_stracks + self._tracker.lost_stracks}
