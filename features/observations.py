"""What the analysis stage hands to feature extraction: one validated type per concept.

- `Detections`: boxes of one frame (people or faces), normalised to the frame, with track ids; adapters build it from
  an ultralytics result, a ByteTrack output array or OpenCV rectangles (like supervision's `Detections`).
- `Word`: one recognised word with absolute times.
- `VlmRead`: a vision-language model's structured read of a camera.
- `CameraObservation`: everything analysis knows about one camera at one tick (the one Results type).

These live in features/ because they are the input half of the feature contract; analysis (runtime/) produces them
and `features.extract` turns them into logged rows and ranker vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    xyxy: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 normalised to [0, 1]
    confidence: np.ndarray  # (N,) float32
    track_id: np.ndarray  # (N,) int64; -1 = not tracked
    class_id: np.ndarray  # (N,) int64

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(xyxy)
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        tid = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if not (len(conf) == len(tid) == len(cls) == n):
            raise ValueError(f"Detections: inconsistent lengths xyxy={n} conf={len(conf)} "
                             f"track_id={len(tid)} class_id={len(cls)}")
        if n and not np.isfinite(xyxy).all():
            raise ValueError("Detections: non-finite box coordinates")
        xyxy = np.clip(xyxy, 0.0, 1.0)
        if n and ((xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1])).any():
            raise ValueError("Detections: box with x2 < x1 or y2 < y1")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "track_id", tid)
        object.__setattr__(self, "class_id", cls)

    def __len__(self) -> int:
        return len(self.xyxy)

    # -- adapters --------------------------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0))

    @classmethod
    def from_pixels(cls, xyxy_px: np.ndarray, width: int, height: int, confidence=None, track_id=None,
                    class_id=None) -> "Detections":
        xyxy_px = np.asarray(xyxy_px, dtype=np.float32).reshape(-1, 4)
        n = len(xyxy_px)
        scale = np.array([width, height, width, height], dtype=np.float32)
        return cls(
            xyxy_px / scale,
            np.ones(n) if confidence is None else confidence,
            np.full(n, -1) if track_id is None else track_id,
            np.zeros(n) if class_id is None else class_id,
        )

    @classmethod
    def from_ultralytics(cls, boxes: Any, width: int, height: int) -> "Detections":
        """From `result.boxes` (untracked detections)."""
        b = boxes.cpu().numpy() if hasattr(boxes, "cpu") else boxes
        tid = b.id if getattr(b, "id", None) is not None else None
        return cls.from_pixels(b.xyxy, width, height, b.conf, tid, b.cls)

    @classmethod
    def from_bytetrack(cls, tracks: np.ndarray, width: int, height: int) -> "Detections":
        """From BYTETracker.update output rows [x1, y1, x2, y2, track_id, score, cls, idx]."""
        t = np.asarray(tracks, dtype=np.float64).reshape(-1, 8) if len(tracks) else np.zeros((0, 8))
        return cls.from_pixels(t[:, :4], width, height, t[:, 5], t[:, 4].astype(np.int64), t[:, 6].astype(np.int64))

    @classmethod
    def from_rects(cls, rects_xywh: np.ndarray, width: int, height: int) -> "Detections":
        """From OpenCV (x, y, w, h) pixel rectangles (e.g. a Haar cascade)."""
        r = np.asarray(rects_xywh, dtype=np.float32).reshape(-1, 4)
        return cls.from_pixels(np.c_[r[:, :2], r[:, :2] + r[:, 2:]], width, height)

    # -- derived measures ------------------------------------------------------------------------------------------
    @property
    def areas(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    @property
    def centers(self) -> np.ndarray:
        return np.c_[(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2]

    def largest_area(self) -> float:
        return float(self.areas.max()) if len(self) else 0.0

    def centrality(self) -> float:
        """1 when the largest box is centred, 0 when its centre sits in a corner."""
        if not len(self):
            return 0.0
        cx, cy = self.centers[int(np.argmax(self.areas))]
        return float(max(0.0, 1.0 - np.hypot(cx - 0.5, cy - 0.5) / np.hypot(0.5, 0.5)))


@dataclass(frozen=True)
class Word:
    start: float  # absolute seconds on the session clock
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class VlmRead:
    t: float  # when the frame it describes was taken
    interest: float  # 1..5
    scene: str = ""
    subjects: tuple[str, ...] = ()
    activity: str = ""
    focus: str = ""


@dataclass
class CameraObservation:
    """Everything analysis knows about one camera at one tick."""

    camera_id: str
    t: float
    people: Detections = field(default_factory=Detections.empty)
    faces: Detections = field(default_factory=Detections.empty)
    track_continuity: float = 0.0
    track_age_s: float = 0.0
    person_speed: float = 0.0
    motion_energy: float = 0.0
    subject_motion: float = 0.0  # motion inside the main subject's face (else person) box: a talking face moves
    audio_dbfs: float = -120.0
    speech_prob: float = 0.0
    speaking: bool = False  # speech right now (VAD over the last ~100 ms): a cut now would be mid-word
    quiet_at: float | None = None  # latest moment of the last tick inside a pause (>= 64 ms) of this camera's audio
    speech_mask: int = 0  # voice activity across the last tick, 8 bins, bit 0 = oldest (word boundaries)
    keyword_hits: int = 0
    asr_words_per_s: float = 0.0
    recent_words: tuple[Word, ...] = ()
    new_words: tuple[Word, ...] = ()  # words the ASR recognised since the last tick (they may lie seconds back)
    vlm: VlmRead | None = None
    stale: bool = False
    degraded: dict[str, str] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def next_safe_cut(self, t: float) -> float:
        """Earliest time >= t that is not inside a recognised word of this camera's speech."""
        for w in self.recent_words:
            if w.start <= t < w.end:
                return w.end
        return t
