"""XGBoost ranker: a booster (file or MLflow model URI) that knows which features and schema version it was trained on.

Per tick it runs `booster.inplace_predict` on a float32 view of the tick's scene matrix (no DataFrame, no DMatrix):
~0.3 ms for 5 cameras on CPU. A booster whose recorded schema version is newer than this code, or whose features the
contract lacks, is refused with a clear error instead of silently scoring garbage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from features.schema import SCHEMA_VERSION

from .base import RankerError, column_index

ATTR_FEATURES = "aiobs_features"
ATTR_SCHEMA = "aiobs_schema_version"
ATTR_VERSION = "aiobs_model_version"


def stamp_booster(booster, features: list[str], model_version: str = "", schema_version: int = SCHEMA_VERSION):
    """Record the contract a booster was trained on inside the booster itself (it travels with the model file)."""
    attrs = {ATTR_FEATURES: json.dumps(list(features)), ATTR_SCHEMA: str(schema_version)}
    if model_version:  # xgboost cannot read back an empty attribute value
        attrs[ATTR_VERSION] = model_version
    booster.set_attr(**attrs)
    booster.feature_names = list(features)
    return booster


class XGBoostRanker:
    def __init__(self, booster, version: str | None = None):
        attrs = booster.attributes()  # (booster.attr() asserts on a missing key in xgboost 3.2)
        feats = attrs.get(ATTR_FEATURES)
        schema = attrs.get(ATTR_SCHEMA)
        if feats is None or schema is None:
            raise RankerError("this XGBoost model does not record its feature contract (aiobs_features / "
                              "aiobs_schema_version attributes): train it with ranker.train or stamp_booster()")
        if int(schema) > SCHEMA_VERSION:
            raise RankerError(f"model was trained on feature-schema v{schema}, newer than this code's "
                              f"v{SCHEMA_VERSION}: upgrade aiobs")
        self.booster = booster
        self.features: list[str] = json.loads(feats)
        self.schema_version = int(schema)
        self.version = version or attrs.get(ATTR_VERSION) or "xgboost"
        self._idx = column_index(self.features)

    @classmethod
    def load(cls, source: str | Path, version: str | None = None, tracking_uri: str | None = None) -> "XGBoostRanker":
        """From a saved booster file (.ubj/.json) or an MLflow model URI (models:/name@alias, runs:/..., m-...),
        resolved against `tracking_uri` (default: MLflow's current tracking URI)."""
        import xgboost as xgb

        src = str(source)
        try:
            if "://" in src or src.startswith(("models:/", "runs:/")):
                import os

                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast when the registry is down
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
                import mlflow
                import mlflow.xgboost

                previous = mlflow.get_tracking_uri() if tracking_uri else None
                if tracking_uri:
                    mlflow.set_tracking_uri(tracking_uri)
                try:
                    model = mlflow.xgboost.load_model(src)
                finally:
                    if previous is not None:
                        mlflow.set_tracking_uri(previous)
                booster = model.get_booster() if hasattr(model, "get_booster") else model
            else:
                if not Path(src).is_file():
                    raise RankerError(f"no model file at {src}")
                booster = xgb.Booster()
                booster.load_model(src)
        except RankerError:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt file, unreachable registry, wrong flavour
            raise RankerError(f"cannot load XGBoost model {src}: {type(e).__name__}: {e}") from e
        booster.set_param({"nthread": 1})  # one tick is 5 rows: threads only add overhead
        return cls(booster, version=version)

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        return np.asarray(self.booster.inplace_predict(np.ascontiguousarray(x[:, self._idx], dtype=np.float32),
                                                       validate_features=False), dtype=np.float64).reshape(-1)

    def explain(self, x_row: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        import xgboost as xgb

        row = np.asarray(x_row, dtype=np.float32)[self._idx].reshape(1, -1)
        contribs = self.booster.predict(xgb.DMatrix(row, feature_names=self.features), pred_contribs=True)[0][:-1]
        order = np.argsort(-contribs)[:top]
        return [(self.features[i], float(contribs[i])) for i in order if contribs[i] > 0]
