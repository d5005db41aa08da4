"""MLflow registry helpers: log and register a trained ranker, alias it `challenger`, and promote it to `champion`
only when the gate passes (it beats the champion, or the rule baseline when there is none, on cut-point top-1 by a
margin, and the replayed program does not regress). The gate's reason is recorded on the model version either way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.extract import SCENE_FEATURES
from features.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

MODEL_NAME = "aiobs-ranker"
EXPERIMENT = "aiobs-ranker"
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Gate:
    margin: float = 0.02  # cut-point top-1 must beat the reference by this much
    max_agreement_drop: float = 0.0  # replay frame agreement may not fall below the reference's by more
    max_ping_pong_increase: int = 0
    max_mid_word_increase: int = 0

    def check(self, challenger: dict, reference: dict, reference_name: str) -> tuple[bool, str]:
        problems = []
        need = reference["cut_top1"] + self.margin
        if not challenger["cut_top1"] >= need:
            problems.append(f"cut_top1 {challenger['cut_top1']:.3f} < {reference_name} "
                            f"{reference['cut_top1']:.3f} + margin {self.margin:.3f}")
        if challenger["replay_frame_agreement"] < reference["replay_frame_agreement"] - self.max_agreement_drop:
            problems.append(f"replay agreement {challenger['replay_frame_agreement']:.3f} regresses from "
                            f"{reference_name}'s {reference['replay_frame_agreement']:.3f}")
        if challenger["replay_ping_pong"] > reference["replay_ping_pong"] + self.max_ping_pong_increase:
            problems.append(f"ping-pong {challenger['replay_ping_pong']} > {reference_name}'s "
                            f"{reference['replay_ping_pong']}")
        if challenger["replay_mid_word_cuts"] > reference["replay_mid_word_cuts"] + self.max_mid_word_increase:
            problems.append(f"mid-word cuts {challenger['replay_mid_word_cuts']} > {reference_name}'s "
                            f"{reference['replay_mid_word_cuts']}")
        if problems:
            return False, "stays challenger: " + "; ".join(problems)
        return True, (f"promoted: cut_top1 {challenger['cut_top1']:.3f} vs {reference_name} "
                      f"{reference['cut_top1']:.3f}, replay agreement {challenger['replay_frame_agreement']:.3f} vs "
                      f"{reference['replay_frame_agreement']:.3f}")


@dataclass
class Registration:
    version: str
    model_uri: str
    run_id: str
    promoted: bool
    reason: str


def _setup(tracking_uri: str, artifacts_dir: str | None):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = Path(artifacts_dir).resolve().as_uri() if artifacts_dir else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def champion_uri(name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{CHAMPION}"


def has_alias(tracking_uri: str, alias: str, name: str = MODEL_NAME) -> bool:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(tracking_uri).get_model_version_by_alias(name, alias)
        return True
    except MlflowException:
        return False


def register(booster, *, tracking_uri: str, artifacts_dir: str | None, metrics: dict, reference: dict,
             reference_name: str, params: dict, plots: dict[str, str] | None = None, gate: Gate | None = None,
             data_info: dict | None = None, name: str = MODEL_NAME) -> Registration:
    """Log the booster with signature + contract + metrics, register it, alias it challenger, maybe champion."""
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    mlflow = _setup(tracking_uri, artifacts_dir)
    gate = gate or Gate()
    promoted, reason = gate.check(metrics, reference, reference_name)
    example = pd.DataFrame(np.zeros((5, len(SCENE_FEATURES)), np.float32), columns=list(SCENE_FEATURES))
    signature = infer_signature(example, np.zeros(5, np.float32))
    with mlflow.start_run(run_name="ranker-train") as run:
        mlflow.log_params({k: v for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)})
        mlflow.log_metrics({f"{reference_name}_{k}": float(v) for k, v in reference.items() if _finite(v)})
        mlflow.set_tags({"feature_schema_version": str(SCHEMA_VERSION), "gate": reason,
                         "reference": reference_name, **{f"data.{k}": str(v) for k, v in (data_info or {}).items()}})
        for path in (plots or {}).values():
            mlflow.log_artifact(path, artifact_path="plots")
        info = mlflow.xgboost.log_model(
            booster, name="ranker", signature=signature, registered_model_name=name, model_format="ubj",
            metadata={"feature_schema_version": SCHEMA_VERSION, "features": list(SCENE_FEATURES)})
    client = MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "feature_schema_version", str(SCHEMA_VERSION))
    client.set_model_version_tag(name, version, "features", json.dumps(list(SCENE_FEATURES)))
    client.set_model_version_tag(name, version, "gate", reason)
    client.set_model_version_tag(name, version, "metrics", json.dumps({k: _round(v) for k, v in metrics.items()}))
    client.set_registered_model_alias(name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    log.info("registered %s v%s: %s", name, version, reason)
    return Registration(version, f"models:/{name}/{version}", run.info.run_id, promoted, reason)


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(float(v))


def _round(v):
    return round(float(v), 4) if _finite(v) else None
