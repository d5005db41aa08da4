"""MLflow hygiene: the platform writes only under its configured store and never touches MLflow's global state.

Run from a scratch working directory: tune (trials as MLflow runs), register (with the switching-policy config) and
load the registered model back; nothing may appear in the working directory (MLflow's default artifact root is
`./mlruns`, its default tracking store `./mlflow.db`), every experiment keeps its artifacts under
settings.mlflow_artifacts_dir, and the process-global tracking/registry URIs are what they were before.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from features.extract import RANKER_FEATURES
from features.store import FeatureStore
from ranker.dataset import load_ranking_data, split_by_session
from ranker.registry import CHALLENGER, EXPERIMENT, MODEL_NAME, Gate, policy_config_of, register
from ranker.simulate import SimConfig, simulate
from ranker.train import best_params, train_ranker, tune
from ranker.xgb import XGBoostRanker
from runtime.settings import load_settings

POLICY = {"min_hold_s": 2.0, "cooldown_s": 4.0, "delta": 0.15, "dwell_s": 0.6, "pingpong_window_s": 8.0,
          "speech_wait_max_s": 1.5, "wide_threshold": 0.2, "max_shot_s": 30.0, "lock_timeout_s": 60.0}
METRICS = {"cut_top1": 0.5, "replay_frame_agreement": 0.5, "replay_ping_pong": 0, "replay_cuts_in_speech": 0,
           "ndcg1_cut": float("nan")}


def _path(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(unquote(urlparse(uri).path))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_platform_writes_only_under_its_store_and_leaves_mlflow_global_state_alone(tmp_path, monkeypatch, caplog):
    import mlflow
    from mlflow.models import Model

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    data_dir = tmp_path / "data"
    settings = load_settings(env={}, data_dir=data_dir)
    settings.ensure_dirs()
    uri, artifacts = settings.mlflow_tracking_uri, Path(settings.mlflow_artifacts_dir).resolve()
    global_uri, global_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    assert uri != global_uri

    with FeatureStore(settings.clickhouse_dsn) as store:
        simulate(store, 6, SimConfig(duration_s=120), seed=3)
        data = load_ranking_data(store)
    train, held = split_by_session(data)
    assert train.n_groups and held.n_groups

    # tuning: 2 trials, each an MLflow run timed like the trial
    (data_dir / "training").mkdir(exist_ok=True)
    study = tune(train, n_trials=2, storage=f"sqlite:///{data_dir / 'training' / 'optuna.db'}", study_name="tiny",
                 folds=2, mlflow_tracking_uri=uri, mlflow_artifacts_dir=settings.mlflow_artifacts_dir)
    assert study.user_attrs["tune_groups"] == study.user_attrs["available_groups"] == train.n_groups
    params, rounds = best_params(study)
    booster = train_ranker(train, params, min(rounds, 50), model_version="tiny")

    # registration with the switching-policy config it was evaluated under
    plot = data_dir / "training" / "plot.txt"
    plot.write_text("a plot")
    reg = register(booster, tracking_uri=uri, artifacts_dir=settings.mlflow_artifacts_dir, metrics=METRICS,
                   reference=METRICS, reference_name="itself", params={**params, "rounds": rounds},
                   plots={"plot": str(plot)}, gate=Gate(margin=0.0, require_real=False), policy_config=POLICY,
                   data_info={"train_sessions": len(train.sessions())})
    assert reg.promoted and reg.version == "1"

    # loads back through the registry alias, against an explicit tracking URI
    ranker = XGBoostRanker.load(f"models:/{MODEL_NAME}@{CHALLENGER}", tracking_uri=uri)
    x = held.X[: held.group_sizes[0]]
    np.testing.assert_allclose(ranker.score(x), XGBoostRanker(booster).score(x), rtol=1e-6)
    assert ranker.features == list(RANKER_FEATURES)
    for other in (reg.model_uri, f"runs:/{reg.run_id}/ranker"):  # a version number; the model the run logged
        np.testing.assert_allclose(XGBoostRanker.load(other, tracking_uri=uri).score(x), ranker.score(x))

    # the policy config: params on the run, a JSON tag on the version
    assert policy_config_of(uri, reg.version) == POLICY
    assert policy_config_of(uri, CHALLENGER) == POLICY
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    mv = client.get_model_version(MODEL_NAME, reg.version)
    assert mv.tags["policy_config"] == json.dumps(POLICY, sort_keys=True)
    assert "promoted" in mv.tags["gate"] and json.loads(mv.tags["metrics"])["cut_top1"] == 0.5
    assert mv.tags["feature_schema_version"] and json.loads(mv.tags["features"]) == list(RANKER_FEATURES)
    assert {a for a in client.get_registered_model(MODEL_NAME).aliases} == {"champion", "challenger"}
    run = client.get_run(reg.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time >= run.info.start_time
    assert {k: run.data.params[f"policy.{k}"] for k in POLICY} == {k: str(v) for k, v in POLICY.items()}
    assert run.data.params["rounds"] == str(rounds) and run.data.metrics["cut_top1"] == 0.5
    assert run.data.metrics["itself_cut_top1"] == 0.5 and run.data.tags["data.train_sessions"]
    assert [a.path for a in client.list_artifacts(reg.run_id, "plots")] == ["plots/plot.txt"]
    # the model carries its signature (what the MLflow UI shows), under the configured artifact store
    model_dir = _path(client.get_model_version_download_uri(MODEL_NAME, reg.version))
    assert model_dir.is_relative_to(artifacts)
    mlmodel = Model.load(str(model_dir / "MLmodel"))
    assert "xgboost" in mlmodel.flavors and mlmodel.signature is not None
    assert [c.name for c in mlmodel.signature.inputs.inputs] == list(RANKER_FEATURES)
    assert mlmodel.metadata["feature_schema_version"] == int(mv.tags["feature_schema_version"])

    # a version registered without a policy config has none
    again = register(booster, tracking_uri=uri, artifacts_dir=settings.mlflow_artifacts_dir, metrics=METRICS,
                     reference=METRICS, reference_name="itself", params={"copy": True}, gate=Gate(margin=1.0))
    assert not again.promoted and policy_config_of(uri, again.version) is None
    assert policy_config_of(uri, "champion") == POLICY

    # the runtime never mixes configurations silently: a warning names both
    import logging

    from ranker.policy import PolicyConfig
    from runtime.model_manager import ModelManager

    with caplog.at_level(logging.WARNING, logger="runtime.model_manager"):
        ModelManager(uri, policy=PolicyConfig(**{**POLICY, "min_hold_s": 3.0})).refresh()
    warned = [r.getMessage() for r in caplog.records if "evaluated under policy" in r.getMessage()]
    assert warned and '"min_hold_s": 2.0' in warned[0] and '"min_hold_s":3.0' in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="runtime.model_manager"):
        ModelManager(uri, policy=PolicyConfig(**POLICY)).refresh()  # the same configuration: quiet
    assert not [r for r in caplog.records if "evaluated under policy" in r.getMessage()]

    # tuning runs: one per trial, timed from the trial's start to its completion
    tuning = client.get_experiment_by_name("aiobs-ranker-tuning")
    runs = {r.data.tags["optuna.trial"]: r for r in client.search_runs([tuning.experiment_id])}
    assert sorted(runs) == ["0", "1"]
    for trial in study.trials:
        r = runs[str(trial.number)]
        assert r.info.start_time == int(trial.datetime_start.timestamp() * 1000)
        assert r.info.end_time == int(trial.datetime_complete.timestamp() * 1000)
        assert r.data.tags["optuna.state"] == trial.state.name and r.data.params["max_depth"]
        assert r.info.status in ("FINISHED", "KILLED")
        assert r.info.end_time - r.info.start_time == pytest.approx(trial.duration.total_seconds() * 1000, abs=2)

    # every experiment this code created keeps its artifacts under the configured store
    for name in (EXPERIMENT, "aiobs-ranker-tuning"):
        exp = client.get_experiment_by_name(name)
        assert _path(exp.artifact_location).is_relative_to(artifacts), (name, exp.artifact_location)
    for r in [*runs.values(), run]:
        assert _path(r.info.artifact_uri).is_relative_to(artifacts)

    # nothing outside the data dir: the working directory stays empty, no mlruns anywhere
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "data"]
    assert not [p for p in tmp_path.rglob("mlruns")]
    assert any(p.name == "MLmodel" for p in _files(artifacts))
    # MLflow's process-global state is untouched
    assert mlflow.get_tracking_uri() == global_uri and mlflow.get_registry_uri() == global_registry
    assert mlflow.active_run() is None
