"""Motion energy: mean absolute difference of consecutive downscaled grey frames (0..1). Cheap and model-free."""

from __future__ import annotations

import cv2
import numpy as np


class MotionMeter:
    def __init__(self, size: tuple[int, int] = (96, 54)):
        self.size = size
        self._prev: np.ndarray | None = None

    def update(self, rgb: np.ndarray) -> float:
        grey = cv2.cvtColor(cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        grey = grey.astype(np.int16)
        prev, self._prev = self._prev, grey
        if prev is None:
            return 0.0
        # x4 so that a person walking across a static shot reads ~0.1-0.3, a whip pan ~1
        return float(min(1.0, np.abs(grey - prev).mean() / 255.0 * 4.0))
