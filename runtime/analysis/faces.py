"""Face detection backends. Each returns `Detections` for one RGB frame.

- `HaarFaceDetector` (default): OpenCV's bundled frontal-face Haar cascade; needs no download.
- `YoloFaceDetector`: any ultralytics model (a YOLO face or pose model), when configured.
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

    def __init__(self, model_path: str, device: str = "cpu", conf: float = 0.35):
        from ultralytics import YOLO

        self.model = YOLO(model_path)
        self.device = device
        self.conf = conf

    def detect(self, rgb: np.ndarray) -> Detections:
        r = self.model.predict(rgb[..., ::-1], device=self.device, conf=self.conf, verbose=False)[0]
        h, w = rgb.shape[:2]
        return Detections.from_ultralytics(r.boxes, w, h)


def make_face_detector(spec: str, device: str = "cpu"):
    """'haar' (default), 'none', or a path to an ultralytics face/pose model."""
    if spec in ("", "haar"):
        return HaarFaceDetector()
    if spec == "none":
        return None
    return YoloFaceDetector(spec, device=device)
