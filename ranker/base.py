"""The ranker interface: score all cameras of one tick from their feature vectors (scene + temporal context)."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from features.extract import RANKER_FEATURES


class RankerError(RuntimeError):
    """A ranker cannot be loaded or does not fit this feature contract; the message says why."""


class Ranker(Protocol):
    version: str  # what goes into the logs' model_version

    def score(self, x: np.ndarray) -> np.ndarray:
        """(n_cameras, len(RANKER_FEATURES)) float32, NaN = missing -> (n_cameras,) float scores, higher = better."""

    def explain(self, x_row: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """The features that pushed one camera's score most, as (feature, contribution), largest first."""


def column_index(names: Sequence[str]) -> np.ndarray:
    """Positions of `names` in the ranker's feature vector; RankerError for a feature the contract does not have."""
    missing = [n for n in names if n not in RANKER_FEATURES]
    if missing:
        raise RankerError(f"model needs feature(s) {missing} that this feature contract does not provide "
                          f"(contract features: {list(RANKER_FEATURES)})")
    return np.array([RANKER_FEATURES.index(n) for n in names], dtype=np.intp)
