"""Dagster resources: ClickHouse (the feature log) and MLflow (tracking + registry), defaulting to the settings."""

from __future__ import annotations

from dagster import ConfigurableResource

from features.store import FeatureStore


class ClickHouseResource(ConfigurableResource):
    dsn: str
    spool_dir: str

    def store(self) -> FeatureStore:
        return FeatureStore(self.dsn)


class MLflowResource(ConfigurableResource):
    tracking_uri: str
    artifacts_dir: str


class TrainingResource(ConfigurableResource):
    """Where training state lives: the Optuna RDB storage (a study resumes from it) and scratch space."""

    optuna_storage: str
    work_dir: str
    dask_scheduler: str = ""  # "tcp://host:8786" -> the final model trains through xgboost.dask


class RealMediaResource(ConfigurableResource):
    """Where the real-media evaluation set is cached (runtime/realset.py) and the detector its analysis runs."""

    realset_dir: str
    yolo_model: str = ""


class DirectorResource(ConfigurableResource):
    """The director configuration production runs (settings.policy, settings.tick_hz): models are evaluated and
    gated under it, and a registered version records it."""

    policy_json: str
    tick_hz: float

    def policy(self):
        import json

        from ranker.policy import PolicyConfig

        return PolicyConfig.from_mapping(json.loads(self.policy_json))

    @property
    def tick_s(self) -> float:
        return 1.0 / self.tick_hz


def default_resources(settings) -> dict:
    from pathlib import Path

    work = Path(settings.data_dir) / "training"
    work.mkdir(parents=True, exist_ok=True)
    return {
        "clickhouse": ClickHouseResource(dsn=settings.clickhouse_dsn, spool_dir=settings.spool_dir),
        "mlflow": MLflowResource(tracking_uri=settings.mlflow_tracking_uri, artifacts_dir=settings.mlflow_artifacts_dir),
        "director": DirectorResource(policy_json=settings.policy.to_json(), tick_hz=settings.tick_hz),
        "real_media": RealMediaResource(realset_dir=str(settings.realset_dir), yolo_model=settings.yolo_model),
        "training": TrainingResource(optuna_storage=f"sqlite:///{work / 'optuna.db'}", work_dir=str(work)),
    }
