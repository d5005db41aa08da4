"""Motion energy: mean absolute difference of consecutive downscaled grey frames (0..1). Cheap and model-free.

Besides the whole frame, the same difference is read inside a region (the main subject's face, else its person box):
a talking face moves while a listener's stays still, which tells who speaks when several cameras share a mic."""

from __future__ import annotations

import cv2
import numpy as np


class MotionMeter:
    def __init__(self, size: tuple[int, int] = (96, 54)):
        self.size = size
        self._prev: np.ndarray | None = None

    def update(self, rgb: np.ndarray, roi: np.ndarray | None = None) -> tuple[float, float]:
        """(whole-frame energy, energy inside `roi` = normalised x1 y1 x2 y2; 0 without a region)."""
        # grey first, then the area resize (both linear: the same picture to +-1 grey level, a third of the work)
        grey = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), self.size, interpolation=cv2.INTER_AREA)
        grey = grey.astype(np.int16)
        prev, self._prev = self._prev, grey
        if prev is None:
            return 0.0, 0.0
        diff = np.abs(grey - prev)
        inside = 0.0
        if roi is not None:
            w, h = self.size
            x1, y1 = int(roi[0] * w), int(roi[1] * h)
            x2, y2 = max(x1 + 1, int(np.ceil(roi[2] * w))), max(y1 + 1, int(np.ceil(roi[3] * h)))
            inside = float(min(1.0, diff[y1:y2, x1:x2].mean() / 255.0 * 4.0))
        # x4 so that a person walking across a static shot reads ~0.1-0.3, a whip pan ~1
        return float(min(1.0, diff.mean() / 255.0 * 4.0)), inside
