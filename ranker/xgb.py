"""XGBoost ranker: a booster (file or MLflow model URI) that knows which features and schema version it was trained on.

Per tick it runs `booster.inplace_predict` on a float32 view of the tick's scene matrix (no DataFrame, no DMatrix):
~0.3 ms for 5 cameras on CPU. A booster whose recorded schema version is newer than this code, or whose features the
contract lacks, is refused with a clear error instead of silently scoring garbage.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from features.schema import SCHEMA_VERSION

from .base import RankerError, column_index

ATTR_FEATURES = "aiobs_features"
ATTR_SCHEMA = "aiobs_schema_version"
ATTR_VERSION = "aiobs_model_version"
ATTR_POLICY = "aiobs_policy"  # the switching-policy timing learned with the model (ranker.policy.TUNED_FIELDS)


def stamp_booster(booster, features: list[str], model_version: str = "", schema_version: int = SCHEMA_VERSION,
                  policy: dict | None = None):
    """Record the contract a booster was trained on inside the booster itself (it travels with the model file), and
    the policy timing learned with it (`policy`: TUNED_FIELDS -> value), which the director core applies."""
    attrs = {ATTR_FEATURES: json.dumps(list(features)), ATTR_SCHEMA: str(schema_version)}
    if model_version:  # xgboost cannot read back an empty attribute value
        attrs[ATTR_VERSION] = model_version
    if policy:
        from .policy import PolicyConfig

        PolicyConfig().with_tuned(policy)  # refuses a setting that is not a learned one, or a bad value
        attrs[ATTR_POLICY] = json.dumps({k: v if isinstance(v, bool) else float(v) for k, v in sorted(policy.items())})
    booster.set_attr(**attrs)
    booster.feature_names = list(features)
    return booster


class XGBoostRanker:
    """`version` is what reports and logs name the model by: the registry's `name/version` when it was loaded from
    the registry (models:/name@alias, models:/name/3), else the label stamped at training; `trained_as` is always
    the label stamped at training (`xgb-...`)."""

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
        self.trained_as: str = attrs.get(ATTR_VERSION) or "xgboost"
        self.version = version or self.trained_as
        try:  # the policy timing learned with this model (None: the front door's configuration applies as is)
            self.policy: dict | None = json.loads(attrs[ATTR_POLICY]) if attrs.get(ATTR_POLICY) else None
            from .policy import PolicyConfig

            PolicyConfig().with_tuned(self.policy)
        except (ValueError, TypeError) as e:
            raise RankerError(f"this XGBoost model carries an unusable policy ({ATTR_POLICY}): {e}") from None
        self._idx = column_index(self.features)

    @classmethod
    def load(cls, source: str | Path, version: str | None = None, tracking_uri: str | None = None) -> "XGBoostRanker":
        """From a saved booster file (.ubj/.json) or an MLflow model URI (models:/name@alias, models:/name/version,
        models:/m-..., runs:/..., or an artifact URI), resolved against `tracking_uri` (default: MLflow's current
        tracking URI) through an explicit client: MLflow's process-global tracking URI is never changed.

        A registered version is labelled `name/version` (`aiobs-ranker/3`, unless `version` is given); a missing
        model, version or alias is a RankerError that names the store searched."""
        import xgboost as xgb

        src = str(source)
        registered: dict = {}
        try:
            if "://" in src or src.startswith(("models:/", "runs:/")):
                import mlflow.xgboost

                with _downloaded(src, tracking_uri, registered) as local:
                    model = mlflow.xgboost.load_model(local)
                booster = model.get_booster() if hasattr(model, "get_booster") else model
            else:
                if not Path(src).is_file():
                    raise RankerError(f"no model file at {src}")
                booster = xgb.Booster()
                booster.load_model(src)
        except RankerError as e:
            if str(e).startswith(("no model file", "cannot load")):
                raise
            raise RankerError(f"cannot load XGBoost model {src}: {e}") from None
        except Exception as e:  # noqa: BLE001 - corrupt file, unreachable registry, wrong flavour
            raise RankerError(f"cannot load XGBoost model {src}: {type(e).__name__}: {e}") from e
        booster.set_param({"nthread": 1})  # one tick is 5 rows: threads only add overhead
        return cls(booster, version=version or registered.get("label"))

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


@contextmanager
def _downloaded(uri: str, tracking_uri: str | None, registered: dict | None = None):
    """A local directory holding the MLflow model at `uri`: read in place from a local artifact store, else downloaded
    into a temporary directory. Registry and logged-model URIs are resolved with MlflowClient(tracking_uri) (MLflow's
    own models:/ resolution reads the process-global registry URI). For a registered version, `registered["label"]`
    is set to `name/version`."""
    import os
    import tempfile

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast when the registry is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.artifacts import download_artifacts
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    registry_uri = tracking_uri or mlflow.get_registry_uri()  # an explicit tracking URI is the registry too
    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    artifact_uri = uri
    if uri.startswith("models:/"):
        from .registry import registry_errors, require_store, resolve_models_uri

        base, sub = ModelsArtifactRepository.split_models_uri(uri)
        require_store(registry_uri, base)
        client = mlflow.MlflowClient(tracking_uri, registry_uri=registry_uri)
        ref = resolve_models_uri(client, registry_uri, base)
        with registry_errors(registry_uri, ref[0]):
            root = client.get_logged_model(ref[0]).artifact_location if len(ref) == 1 \
                else client.get_model_version_download_uri(*ref)
        if len(ref) == 2 and registered is not None:
            registered["label"] = f"{ref[0]}/{ref[1]}"
        artifact_uri = f"{root.rstrip('/')}/{sub}" if sub else root
    elif uri.startswith("runs:/"):
        artifact_uri = _run_artifact_uri(mlflow.MlflowClient(tracking_uri, registry_uri=registry_uri), uri)
    if artifact_uri.startswith("file:"):  # a local artifact store: read it in place
        from mlflow.utils.file_utils import local_file_uri_to_path

        yield local_file_uri_to_path(artifact_uri)
        return
    with tempfile.TemporaryDirectory(prefix="aiobs-model-") as tmp:
        yield download_artifacts(artifact_uri=artifact_uri, dst_path=tmp, tracking_uri=tracking_uri,
                                 registry_uri=registry_uri)


def _run_artifact_uri(client, uri: str) -> str:
    """runs:/<run_id>/<path>: the run's own artifact, or (MLflow 3) the artifacts of the model named <path> that the
    run logged, a LoggedModel stored outside the run's artifact directory."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
    run = client.get_run(run_id)
    root = run.info.artifact_uri.rstrip("/")
    path = path.strip("/")
    if not path:
        return root
    # (client.list_artifacts / mlflow's runs:/ repository fall back to logged models through the global tracking URI)
    if not get_artifact_repository(root, tracking_uri=client.tracking_uri).list_artifacts(path):
        name, _, rest = path.partition("/")
        models = [m for m in client.search_logged_models([run.info.experiment_id],
                                                         filter_string=f"source_run_id = '{run_id}'")
                  if m.name == name]
        if models:
            model = max(models, key=lambda m: m.creation_timestamp)
            return f"{model.artifact_location.rstrip('/')}/{rest}" if rest else model.artifact_location
    return f"{root}/{path}"
