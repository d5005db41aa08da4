"""Many rooms, one detector: a small batching scheduler with a deadline.

On a GPU node every room's `AnalysisEngine` hands its tick's frames to its vision thread; with one detector per room
each of those is a separate, launch-bound forward. `DetectionBatcher` sits where the detector was (same `detect`
signature): each vision thread's call waits while a single worker gathers every room's frames that arrive within
`max_wait_ms` of the first (or until `max_frames` are waiting), runs ONE batched detection over all of them and hands
each caller its own results. A detection that raises fails only the calls in that batch (their engines degrade
`people` for that tick, as with a per-room detector).

    batcher = shared_detector(("yolo11n.pt", "cuda:0", 640), lambda: PersonDetector(...))   # the first room builds it
    AnalysisEngine(cams, detector=batcher, ...)                                             # per room

The engines' people stay one tick behind either way (the engine overlaps detection with the rest of its tick), so the
deadline costs no tick time unless a batch takes longer than a tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)


class DetectionBatcher:
    def __init__(self, detector, max_wait_ms: float = 4.0, max_frames: int = 200, method: str = "detect"):
        self.detector = detector
        self._batch_fn = getattr(detector, method)  # "detect" (people) or "detect_many" (a batched face model)
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_frames = max_frames
        self._queue: deque[tuple[list[np.ndarray], Future]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0
        self.frames = 0
        self.batch_frames: deque[int] = deque(maxlen=2000)  # frames per batch run, recent
        self._worker = threading.Thread(target=self._run, name="detect-batcher", daemon=True)
        self._worker.start()

    def __getattr__(self, name):  # imgsz, precision, backend, ... of the detector it shares
        if name == "detector":
            raise AttributeError(name)
        return getattr(self.detector, name)

    def detect(self, frames_rgb: list[np.ndarray]) -> list:
        """The detector's results for these frames, detected in a batch with whatever else arrives meanwhile."""
        if not frames_rgb:
            return []
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the detection batcher is closed")
            self._queue.append((list(frames_rgb), fut))
            self._cv.notify()
        return fut.result()

    detect_many = detect  # a shared batched face model is called like the face model itself

    def _take_batch(self) -> list[tuple[list[np.ndarray], Future]]:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while (sum(len(f) for f, _ in self._queue) < self.max_frames and not self._closed
                   and (left := deadline - time.monotonic()) > 0):
                self._cv.wait(left)
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0][0]) <= self.max_frames):
                item = self._queue.popleft()
                batch.append(item)
                n += len(item[0])
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            frames = [f for fs, _ in batch for f in fs]
            try:
                results = self._batch_fn(frames)
                if len(results) != len(frames):
                    raise RuntimeError(f"detector returned {len(results)} results for {len(frames)} frames")
            except BaseException as e:  # noqa: BLE001 - every caller of this batch gets the error, the worker lives on
                for _, fut in batch:
                    fut.set_exception(e)
                continue
            self.batches += 1
            self.frames += len(frames)
            self.batch_frames.append(len(frames))
            i = 0
            for fs, fut in batch:
                fut.set_result(results[i:i + len(fs)])
                i += len(fs)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._worker.join(timeout=10)
        with self._cv:
            while self._queue:
                self._queue.popleft()[1].set_exception(RuntimeError("the detection batcher is closed"))

    def describe(self) -> dict:
        sizes = np.asarray(self.batch_frames) if self.batch_frames else np.zeros(1)
        return {"batches": self.batches, "frames": self.frames, "frames_per_batch_p50": float(np.median(sizes)),
                "frames_per_batch_max": int(sizes.max()), "max_wait_ms": self.max_wait_s * 1000}


_SHARED: dict[tuple, DetectionBatcher] = {}
_SHARED_LOCK = threading.Lock()


def shared_detector(key: tuple, factory, max_wait_ms: float = 4.0, method: str = "detect") -> DetectionBatcher:
    """The process's one batcher for `key` (model, device, input size), built with `factory()` on first use. Rooms
    started later in the same process (the BentoML service's live sessions) join it. A factory that raises raises here
    and caches nothing (the next room tries again)."""
    with _SHARED_LOCK:
        b = _SHARED.get(key)
        if b is None:
            b = _SHARED[key] = DetectionBatcher(factory(), max_wait_ms=max_wait_ms, method=method)
        return b
