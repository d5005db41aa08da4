"""Face detection backends. Each returns `Detections` for one RGB frame.

- `HaarFaceDetector` (default): OpenCV's bundled frontal-face Haar cascade; needs no download.
- `YoloFaceDetector`: any ultralytics model (a YOLO face or pose model), when configured. On CUDA it runs through the
  same direct path as people (`yolo_direct.DirectYolo`: letterbox on the device, fp16, CUDA graphs, one NMS per batch)
  and is `batched`: the engine then detects the faces of all of a tick's frames in one call on its vision thread,
  beside people, instead of one Haar pass per camera on the tick thread. Haar is the CPU fallback.
"""

from __future__ import annotations

import cv2
import numpy as np

from features.observations import Detections
from runtime.models import ModelUnavailable


class HaarFaceDetector:
    name = "haar"

    def __init__(self, work_width: int = 256, min_face_px: int = 12):
        data = getattr(cv2, "data", None)
        if data is None:
            raise ModelUnavailable("this OpenCV has no bundled Haar cascades (cv2.data): install opencv-python<5")
        self._cascade = cv2.CascadeClassifier(data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise ModelUnavailable("OpenCV could not load haarcascade_frontalface_default.xml")
        self.work_width = work_width
        self.min_face_px = min_face_px

    def detect(self, rgb: np.ndarray) -> Detections:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.work_width / w)
        small = cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        grey = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        rects = self._cascade.detectMultiScale(grey, scaleFactor=1.2, minNeighbors=4,
                                               minSize=(self.min_face_px, self.min_face_px))
        if len(rects) == 0:
            return Detections.empty()
        return Detections.from_rects(np.asarray(rects, dtype=np.float32) / scale, w, h)


class YoloFaceDetector:
    name = "yolo"

    def __init__(self, model_path: str, device: str = "cpu", conf: float = 0.35, imgsz: int = 0,
                 backend: str = "auto"):
        from .people import import_ultralytics, resolve_device

        import_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(model_path)
        self.device = resolve_device(device)
        self.conf = conf
        self.imgsz = imgsz or 640
        self._direct = None
        if backend == "direct" or (backend == "auto" and self.device.startswith("cuda")):
            from .yolo_direct import DirectYolo

            self._direct = DirectYolo(self.model, self.device, self.imgsz, conf=conf)
        self.batched = self._direct is not None  # the engine detects a tick's faces in one call (detect_many)

    def detect(self, rgb: np.ndarray) -> Detections:
        return self.detect_many([rgb])[0]

    def detect_many(self, frames_rgb: list[np.ndarray]) -> list[Detections]:
        if self._direct is not None:
            results = self._direct.detect(frames_rgb)
        else:
            results = [self.model.predict(f[..., ::-1], device=self.device, conf=self.conf, imgsz=self.imgsz,
                                          verbose=False)[0] for f in frames_rgb]
        return [Detections.from_ultralytics(r.boxes, f.shape[1], f.shape[0]) for r, f in zip(results, frames_rgb)]


def make_face_detector(spec: str, device: str = "cpu"):
    """'haar' (default), 'none', or a path to an ultralytics face/pose model."""
    if spec in ("", "haar"):
        return HaarFaceDetector()
    if spec == "none":
        return None
    return YoloFaceDetector(spec, device=device)
