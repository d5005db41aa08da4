"""The ranker interface: score all cameras of one tick from their scene-feature vectors."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from features.extract import SCENE_FEATURES


class RankerError(RuntimeError):
    """A ranker cannot be loaded or does not fit this feature contract; the message says why."""


class Ranker(Protocol):
    version: str  # what goes into the logs' model_version

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n_cameras, len(SCENE_FEATURES)) float32, NaN = missing -> (n_cameras,) float scores, higher = better."""

    def explain(self, x_row: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """The features that pushed one camera's score most, as (feature, contribution), largest first."""


def column_index(names: Sequence[str]) -> np.ndarray:
    """Positions of `names` in the scene vector; RankerError for a feature the contract does not have."""
    missing = [n for n in names if n not in SCENE_FEATURES]
    if missing:
        raise RankerError(f"model needs feature(s) {missing} that this feature contract does not provide "
                          f"(contract features: {list(SCENE_FEATURES)})")
    return np.array([SCENE_FEATURES.index(n) for n in names], dtype=np.intp)
