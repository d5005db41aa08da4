"""The rule-based baseline: a weighted sum of normalised scene features (the seed plan's weighted CameraRanker).

Each feature is mapped to 0..1, multiplied by its weight; features that are missing (NaN, e.g. no VLM) drop out and
the remaining weights are renormalised, so a camera is never punished for a model that is not running.
"""

from __future__ import annotations

import numpy as np

from features.extract import SCENE_FEATURES

from .base import column_index

DEFAULT_WEIGHTS: dict[str, float] = {
    "speech_prob": 0.45,  # gated by audio_rel_db: speech heard only as bleed from another mic counts little
    "largest_face_area": 0.10,
    "people_count": 0.08,
    "motion_energy": 0.08,
    "keyword_hits": 0.08,
    "vlm_interest": 0.10,
    "person_centrality": 0.06,
    "track_continuity": 0.05,
}

# feature -> (offset, scale): normalised = clip((x - offset) / scale, 0, 1)
NORMALISE: dict[str, tuple[float, float]] = {
    "speech_prob": (0.4, 0.6),  # below 0.4 (music, noise, short blips) is not speech
    "audio_rel_db": (-20.0, 20.0),  # 0 dB below the loudest -> 1, 20 dB below -> 0
    "largest_face_area": (0.0, 0.05),  # a face of 5% of the frame is a close-up
    "people_count": (0.0, 3.0),
    "motion_energy": (0.0, 0.3),
    "keyword_hits": (0.0, 1.0),
    "vlm_interest": (1.0, 4.0),  # 1..5
    "person_centrality": (0.0, 1.0),
    "track_continuity": (0.0, 1.0),
    "audio_dbfs": (-60.0, 45.0),
    "largest_person_area": (0.0, 0.3),
    "face_count": (0.0, 2.0),
    "asr_words_per_s": (0.0, 3.0),
}


class WeightedBaselineRanker:
    def __init__(self, weights: dict[str, float] | None = None, version: str = "baseline-v1"):
        w = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = [k for k in w if k not in NORMALISE]
        if unknown:
            raise ValueError(f"no normalisation for feature(s) {unknown}; known: {sorted(NORMALISE)}")
        self.names = list(w)
        self.version = version
        self._idx = column_index(self.names)
        self._w = np.array([w[n] for n in self.names], dtype=np.float32)
        self._off = np.array([NORMALISE[n][0] for n in self.names], dtype=np.float32)
        self._scale = np.array([NORMALISE[n][1] for n in self.names], dtype=np.float32)
        self._speech = self.names.index("speech_prob") if "speech_prob" in self.names else None
        self._rel = SCENE_FEATURES.index("audio_rel_db")

    def _normalised(self, x: np.ndarray) -> np.ndarray:
        f = np.clip((x[..., self._idx] - self._off) / self._scale, 0.0, 1.0)
        if self._speech is not None:  # speech counts for the camera whose mic it is loudest on
            rel = np.nan_to_num(x[..., self._rel], nan=0.0)
            f[..., self._speech] *= np.clip(1.0 + rel / 20.0, 0.0, 1.0)
        return f

    def score(self, x: np.ndarray) -> np.ndarray:
        f = self._normalised(np.atleast_2d(x))
        present = ~np.isnan(f)
        w = np.where(present, self._w, 0.0)
        total = w.sum(axis=1)
        return np.where(total > 0, (np.nan_to_num(f) * w).sum(axis=1) / np.maximum(total, 1e-9), 0.0)

    def explain(self, x_row: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        f = np.nan_to_num(self._normalised(np.asarray(x_row, dtype=np.float32)))
        contrib = f * self._w
        order = np.argsort(-contrib)[:top]
        return [(self.names[i], float(contrib[i])) for i in order if contrib[i] > 0]


assert set(DEFAULT_WEIGHTS) <= set(SCENE_FEATURES)
