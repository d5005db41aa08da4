"""A YOLO network called directly, for GPU rate: the frames go up once, everything else stays on the device.

ultralytics' `predict` letterboxes each frame with OpenCV on the CPU, runs the network eagerly (kernel-launch bound on
a big GPU: ~17 ms for 5 frames of yolo11n where the arithmetic is < 1 ms) and runs NMS image by image. `DirectYolo`
does the same work the other way round:

    frames (uint8 RGB, any sizes) -> one upload per frame -> resize + pad into a FIXED canvas on the device (one canvas
    per detector, from the first frame's aspect, stride 32) -> a FIXED batch (padded up to the next bucket) ->
    the fused (conv+bn) network in fp16, replayed as a CUDA graph captured once per bucket -> one vectorised NMS for the
    whole batch -> one copy back -> ultralytics `Results` (the type the trackers and the rest of analysis read).

It matches `predict`'s semantics (best class over all classes, then the class filter; class-aware NMS at the same IoU;
at most `max_det` boxes per image; boxes scaled back into each frame), so features do not change with the backend; the
only difference is the resize kernel (torch bilinear instead of OpenCV's), a pixel or so on a box. On a CPU the same
path runs eagerly (tests compare it with `predict`); production on a CPU keeps `predict` (`PersonDetector`'s choice).

Not thread-safe: one caller at a time (the engine's vision thread, or `DetectionBatcher`'s worker for many rooms).
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200)  # batches are padded up to one of these (fixed shapes, few graphs)
PAD_VALUE = 114 / 255.0  # ultralytics' letterbox grey
STRIDE = 32


def bucket_for(n: int, buckets=BATCH_BUCKETS) -> int:
    for b in buckets:
        if n <= b:
            return b
    return int(math.ceil(n / buckets[-1]) * buckets[-1])


def canvas_for(h: int, w: int, imgsz: int, stride: int = STRIDE) -> tuple[int, int]:
    """(H, W) of the network input for an h x w frame: the long side scaled to `imgsz`, each side padded to the stride
    (ultralytics' rectangular letterbox; 640x360 at 640 -> 384x640)."""
    r = imgsz / max(h, w)
    return (int(math.ceil(round(h * r) / stride) * stride), int(math.ceil(round(w * r) / stride) * stride))


class DirectYolo:
    """`detect(frames) -> list[Results]` through the network directly; see the module doc."""

    def __init__(self, yolo, device: str, imgsz: int, *, conf: float = 0.1, iou: float = 0.7,
                 classes: list[int] | None = None, half: bool | None = None, cuda_graphs: bool | None = None,
                 max_det: int = 300, max_nms: int = 30000):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.half = cuda if half is None else half
        self.cuda_graphs = cuda if cuda_graphs is None else (cuda_graphs and cuda)
        import copy

        net = copy.deepcopy(yolo.model)  # the caller's YOLO stays as it was (predict remains a fallback)
        net = net.fuse(verbose=False) if hasattr(net, "fuse") else net
        net = net.to(self.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.half() if self.half else net.float()
        self.dtype = torch.float16 if self.half else torch.float32
        head = net.model[-1]
        self.end2end = bool(getattr(head, "end2end", False))
        self.names = yolo.names
        self.nc = len(self.names)
        self.imgsz = imgsz
        self.conf, self.iou, self.max_det, self.max_nms = conf, iou, max_det, max_nms
        self.classes = None if classes is None else torch.tensor(classes, device=self.device)
        self.canvas: tuple[int, int] | None = None  # fixed on the first call
        self._inputs: dict[int, "torch.Tensor"] = {}  # bucket -> static input
        self._graphs: dict[int, tuple] = {}  # bucket -> (graph, output, kept tensors)
        self._graph_failed: dict[int, str] = {}
        self._staging: dict[tuple, "torch.Tensor"] = {}  # frame shape -> pinned host buffer for the upload
        self._lock = threading.Lock()
        self.stats = {"calls": 0, "frames": 0, "graph_replays": 0, "eager_runs": 0}

    # -- the steps ----------------------------------------------------------------------------------------------------
    def detect(self, frames_rgb: list[np.ndarray]) -> list:
        if not frames_rgb:
            return []
        with self._lock, self.torch.inference_mode():
            n = len(frames_rgb)
            if self.canvas is None:
                h, w = frames_rgb[0].shape[:2]
                self.canvas = canvas_for(h, w, self.imgsz)
            bucket = bucket_for(n)
            if bucket > BATCH_BUCKETS[-1]:  # beyond the largest bucket: in chunks of it
                out = []
                for i in range(0, n, BATCH_BUCKETS[-1]):
                    out.extend(self._detect_locked(frames_rgb[i:i + BATCH_BUCKETS[-1]]))
                return out
            return self._detect_locked(frames_rgb)

    def _detect_locked(self, frames_rgb: list[np.ndarray]) -> list:
        n = len(frames_rgb)
        bucket = bucket_for(n) if self.cuda_graphs else n  # eager on a CPU: padded rows would cost full frames
        x = self._input(bucket)
        geometry = self._letterbox_into(x, frames_rgb)
        y = self._forward(x, bucket)[:n]
        dets = self._nms(y)
        self.stats["calls"] += 1
        self.stats["frames"] += n
        return self._results(frames_rgb, dets, geometry)

    def _input(self, bucket: int):
        """The batch's input tensor: a static one per bucket when graphs replay it, else a fresh one (eager batches
        come in any size; keeping one per size would hold memory for every size ever seen)."""
        x = self._inputs.get(bucket)
        if x is None:
            x = self.torch.full((bucket, 3, *self.canvas), PAD_VALUE, dtype=self.dtype, device=self.device)
            if self.cuda_graphs:
                self._inputs[bucket] = x
        return x

    def _letterbox_into(self, x, frames_rgb: list[np.ndarray]) -> list[tuple[float, int, int]]:
        """Resize each frame to fit the canvas (aspect kept) and centre it in row i of `x`, grey around it. Frames of the
        same size are resized together. Returns (gain, left, top) per frame for scaling boxes back."""
        torch = self.torch
        F = torch.nn.functional
        ch, cw = self.canvas
        geometry: list[tuple[float, int, int]] = [None] * len(frames_rgb)  # type: ignore[list-item]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames_rgb):
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected HxWx3 uint8 RGB, got {f.shape} {f.dtype}")
            groups.setdefault(f.shape[:2], []).append(i)
        x.fill_(PAD_VALUE)
        for (h, w), idx in groups.items():
            gain = min(ch / h, cw / w)
            nh, nw = int(round(h * gain)), int(round(w * gain))
            top, left = int(round((ch - nh) / 2 - 0.1)), int(round((cw - nw) / 2 - 0.1))
            up = self._upload([frames_rgb[i] for i in idx]).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            if (nh, nw) != (h, w):
                up = F.interpolate(up, size=(nh, nw), mode="bilinear", align_corners=False)
            rows = torch.tensor(idx, device=self.device)
            x[rows, :, top:top + nh, left:left + nw] = up
            for i in idx:
                geometry[i] = (gain, left, top)
        return geometry

    def _upload(self, frames: list[np.ndarray]):
        """Frames of one size -> a (k, h, w, 3) uint8 tensor on the device: one host copy into a pinned buffer (reused
        per shape), one asynchronous upload."""
        torch = self.torch
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack(frames))
        k, shape = len(frames), frames[0].shape
        host = self._staging.get(shape)
        if host is None or host.shape[0] < k:  # one buffer per frame size, grown to the largest group seen
            host = torch.empty((max(k, BATCH_BUCKETS[2]), *shape), dtype=torch.uint8).pin_memory()
            self._staging[shape] = host
        np.stack(frames, out=host[:k].numpy())
        return host[:k].to(self.device, non_blocking=True)

    def _eager(self, x):
        y = self.net(x)
        return y[0] if isinstance(y, (tuple, list)) else y

    def _forward(self, x, bucket: int):
        if not self.cuda_graphs or bucket in self._graph_failed:
            self.stats["eager_runs"] += 1
            return self._eager(x)
        entry = self._graphs.get(bucket)
        if entry is None:
            entry = self._capture(x, bucket)
            if entry is None:
                self.stats["eager_runs"] += 1
                return self._eager(x)
        entry[0].replay()
        self.stats["graph_replays"] += 1
        return entry[1]

    def _capture(self, x, bucket: int):
        """Capture the forward for this bucket's static input as a CUDA graph (warm-up on a side stream first, as
        torch requires). The head's anchors are cached per input shape and replaced when the shape changes: the graph
        reads them at a fixed address, so the tensors it captured are kept alive with it."""
        torch = self.torch
        try:
            s = torch.cuda.Stream(self.device)
            s.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(s):
                for _ in range(2):
                    self._eager(x)
            torch.cuda.current_stream(self.device).wait_stream(s)
            g = torch.cuda.CUDAGraph()
            # thread_local: other threads (other rooms' detectors, the VLM) keep launching work while this captures
            with torch.cuda.graph(g, capture_error_mode="thread_local"):
                out = self._eager(x)
            head = self.net.model[-1]
            kept = tuple(getattr(head, a, None) for a in ("anchors", "strides"))
            self._graphs[bucket] = (g, out, kept)
            log.info("DirectYolo: CUDA graph captured for batch %d at %s", bucket, self.canvas)
            return self._graphs[bucket]
        except Exception as e:  # noqa: BLE001 - eager still works; say so once
            self._graph_failed[bucket] = f"{type(e).__name__}: {e}"
            log.warning("DirectYolo: CUDA graph capture failed for batch %d (%s); this batch size runs eagerly",
                        bucket, e)
            return None

    def _nms(self, y):
        """One vectorised NMS for the whole batch; returns (image index, x1, y1, x2, y2, conf, cls) rows on the CPU."""
        torch = self.torch
        import torchvision

        if self.end2end:  # (B, max_det, 6) already suppressed: [x1, y1, x2, y2, conf, cls]
            b, n = torch.nonzero(y[..., 4] > self.conf, as_tuple=True)
            rows = y[b, n].float()
            if self.classes is not None:
                keep = (rows[:, 5:6] == self.classes).any(1)
                rows, b = rows[keep], b[keep]
            return torch.cat((b[:, None].float(), rows), 1).cpu().numpy()
        y = y.transpose(1, 2)  # (B, N, 4 + nc)
        cls_scores = y[..., 4:4 + self.nc]
        conf, j = cls_scores.max(-1)  # best class over ALL classes, as predict does...
        b, n = torch.nonzero(conf > self.conf, as_tuple=True)
        if b.numel() == 0:
            return np.zeros((0, 7), np.float32)
        conf, j = conf[b, n].float(), j[b, n]
        if self.classes is not None:  # ...then the class filter
            keep = (j[:, None] == self.classes).any(1)
            b, n, conf, j = b[keep], n[keep], conf[keep], j[keep]
        if b.numel() > self.max_nms * y.shape[0]:
            top = conf.argsort(descending=True)[: self.max_nms * y.shape[0]]
            b, n, conf, j = b[top], n[top], conf[top], j[top]
        xywh = y[b, n, :4].float()
        boxes = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
        keep = torchvision.ops.batched_nms(boxes, conf, b * self.nc + j, self.iou)  # per image and class
        b, boxes, conf, j = b[keep], boxes[keep], conf[keep], j[keep]
        rows = torch.cat((b[:, None].float(), boxes, conf[:, None], j[:, None].float()), 1).cpu().numpy()
        if len(rows) and np.bincount(rows[:, 0].astype(int)).max() > self.max_det:  # at most max_det per image
            order = np.lexsort((-rows[:, 5], rows[:, 0]))
            rows = rows[order]
            first = np.searchsorted(rows[:, 0], rows[:, 0], side="left")
            rows = rows[np.arange(len(rows)) - first < self.max_det]
        return rows

    def _results(self, frames_rgb, dets: np.ndarray, geometry) -> list:
        from ultralytics.engine.results import Results

        torch = self.torch
        out = []
        img_idx = dets[:, 0].astype(int) if len(dets) else np.zeros(0, int)
        for i, f in enumerate(frames_rgb):
            gain, left, top = geometry[i]
            h, w = f.shape[:2]
            d = dets[img_idx == i, 1:].copy()
            if len(d):
                d[:, [0, 2]] = ((d[:, [0, 2]] - left) / gain).clip(0, w)
                d[:, [1, 3]] = ((d[:, [1, 3]] - top) / gain).clip(0, h)
                d = d[np.argsort(-d[:, 4], kind="stable")]
            # orig_img as BGR, like predict's (ByteTrack ignores it; plotting reads BGR)
            out.append(Results(f[..., ::-1], path="", names=self.names, boxes=torch.from_numpy(d.astype(np.float32))
                               .reshape(-1, 6)))
        return out

    def prepare(self, frame_hw: tuple[int, int], buckets=BATCH_BUCKETS) -> float:
        """Fix the canvas for frames of `frame_hw` and capture every bucket's graph now (start-up), not at the first
        batch of that size mid-session. Returns the seconds it took."""
        import time

        t0 = time.perf_counter()
        blank = np.zeros((*frame_hw, 3), np.uint8)
        for b in buckets:
            self.detect([blank] * b)
        return time.perf_counter() - t0

    def describe(self) -> dict:
        return {"backend": "direct", "device": str(self.device), "precision": "fp16" if self.half else "fp32",
                "canvas": list(self.canvas) if self.canvas else None, "cuda_graphs": self.cuda_graphs,
                "graphs": sorted(self._graphs), "graph_failed": dict(self._graph_failed), **self.stats}
