"""Feature extraction: `CameraObservation` -> the contract's scene features of one tick.

The director core (ranker/core.py) appends the temporal context features (features/temporal.py, computed from this
and earlier ticks) to these vectors, scores the result (`RANKER_FEATURES`) and logs exactly it as the camera_ticks
row, so training reads what the runtime scored.
"""

from __future__ import annotations

import numpy as np

from .observations import CameraObservation
from .schema import CAMERA_TICKS, context_feature_names, ranker_feature_names, scene_feature_names

SCENE_FEATURES: tuple[str, ...] = tuple(scene_feature_names(CAMERA_TICKS))  # one tick's view of a camera
TEMPORAL_FEATURES: tuple[str, ...] = tuple(context_feature_names(CAMERA_TICKS))  # features/temporal.py
RANKER_FEATURES: tuple[str, ...] = tuple(ranker_feature_names(CAMERA_TICKS))  # what a ranker scores: both, in order
assert RANKER_FEATURES[:len(SCENE_FEATURES)] == SCENE_FEATURES
# the values each scene feature can take (the contract's `bounds`; unbounded where it has none): what an external
# payload or an imported row is held to
SCENE_BOUNDS: dict[str, tuple[float, float]] = {f: CAMERA_TICKS[f].bounds or (-float("inf"), float("inf"))
                                                for f in SCENE_FEATURES}


def scene_features(obs: CameraObservation, loudest_dbfs: float | None = None) -> dict[str, float | int | None]:
    """The scene features of one observation, keyed by contract column (NULL-able ones may be None).

    `loudest_dbfs` is the loudest camera's level at this tick (cross-camera context); None = this camera.
    """
    level = float(max(-120.0, obs.audio_dbfs))
    rel = 0.0 if loudest_dbfs is None else min(0.0, max(-120.0, level - loudest_dbfs))
    vlm_age = None if obs.vlm is None else max(0.0, obs.t - obs.vlm.t)
    return {
        "people_count": int(len(obs.people)),
        "largest_person_area": obs.people.largest_area(),
        "person_centrality": obs.people.centrality(),
        "track_continuity": float(obs.track_continuity),
        "track_age_s": float(obs.track_age_s),
        "person_speed": float(obs.person_speed),
        "face_count": int(len(obs.faces)),
        "largest_face_area": obs.faces.largest_area(),
        "face_centrality": obs.faces.centrality(),
        "motion_energy": float(obs.motion_energy),
        "subject_motion": float(obs.subject_motion),
        "audio_dbfs": level,
        "audio_rel_db": rel,
        "speech_prob": float(obs.speech_prob),
        "keyword_hits": int(obs.keyword_hits),
        "asr_words_per_s": float(obs.asr_words_per_s),
        "vlm_interest": None if obs.vlm is None else float(obs.vlm.interest),
        "vlm_age_s": vlm_age,
    }


def loudest(observations) -> float:
    return max((max(-120.0, o.audio_dbfs) for o in observations), default=-120.0)


def scene_vector(obs: CameraObservation, out: np.ndarray | None = None, loudest_dbfs: float | None = None) -> np.ndarray:
    """float32 vector in SCENE_FEATURES order; NULL becomes NaN (XGBoost's missing value)."""
    f = scene_features(obs, loudest_dbfs)
    v = out if out is not None else np.empty(len(SCENE_FEATURES), dtype=np.float32)
    for i, name in enumerate(SCENE_FEATURES):
        x = f[name]
        v[i] = np.nan if x is None else x
    return v


def scene_matrix(observations: list[CameraObservation]) -> np.ndarray:
    """(n_cameras, len(SCENE_FEATURES)) for one tick, with the cross-camera features filled in."""
    top = loudest(observations)
    m = np.empty((len(observations), len(SCENE_FEATURES)), dtype=np.float32)
    for i, o in enumerate(observations):
        scene_vector(o, m[i], top)
    return m
