"""The learned-ranker platform end to end: simulate -> Dagster graph (in-process materialize) -> MLflow registry,
gated promotion, asset checks on broken data, the new-labels sensor, xgboost.dask, and the notebooks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize

from features.schema import CAMERA_TICKS, SCHEMA_VERSION
from features.spool import SpoolWriter
from features.store import FeatureStore
from pipelines import assets
from pipelines.definitions import CHECKS, RANKER_ASSETS, build_definitions, new_labels_sensor
from pipelines.resources import default_resources
from ranker.dataset import load_ranking_data, split_by_session
from ranker.evaluate import evaluate
from ranker.registry import CHAMPION, CHALLENGER, Gate, register
from ranker.simulate import SimConfig, simulate
from ranker.xgb import XGBoostRanker
from runtime.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def run_graph(settings, trials=4, raise_on_error=True, selection=None):
    return materialize([*RANKER_ASSETS, *CHECKS], resources=default_resources(settings),
                       instance=DagsterInstance.ephemeral(), raise_on_error=raise_on_error, selection=selection,
                       run_config={"ops": {"ranker_study": {"config": {"n_trials": trials, "folds": 2}}}})


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    data = tmp_path_factory.mktemp("platform")
    settings = load_settings(env={}, data_dir=data)
    settings.ensure_dirs()
    with FeatureStore(settings.clickhouse_dsn) as store:
        simulate(store, 20, SimConfig(duration_s=240), seed=1)
    first = run_graph(settings)
    return settings, first


def test_whole_graph_learns_what_the_baseline_does_not(platform):
    settings, res = platform
    assert res.success
    assert {c.check_name: c.passed for c in res.get_asset_check_evaluations()} == {
        "dataset_row_counts": True, "dataset_null_rates": True, "dataset_schema_version": True,
        "dataset_label_balance": True}
    ev = res.output_for_node("ranker_evaluation")["results"]
    learned, baseline = ev["learned"], ev["baseline"]
    assert learned["cut_top1"] >= baseline["cut_top1"] + 0.15, (learned, baseline)
    assert learned["replay_frame_agreement"] > baseline["replay_frame_agreement"]
    assert learned["cut_points"] > 20 and learned["sessions"] >= 2
    reg = res.output_for_node("ranker_registration")
    assert reg["promoted"] and reg["reason"].startswith("promoted") and reg["version"] == "1"
    study = res.output_for_node("ranker_study")
    assert study["rounds"] >= 50 and "max_depth" in study["params"]
    plots = res.output_for_node("ranker_evaluation")["plots"]
    assert all(Path(p).is_file() for p in plots.values()) and len(plots) == 3


def test_registry_aliases_signature_and_runtime_loading(platform):
    settings, _ = platform
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    champ = client.get_model_version_by_alias("aiobs-ranker", CHAMPION)
    chall = client.get_model_version_by_alias("aiobs-ranker", CHALLENGER)
    assert str(champ.version) == str(chall.version) == "1"
    assert champ.tags["feature_schema_version"] == str(SCHEMA_VERSION) and "promoted" in champ.tags["gate"]
    ranker = XGBoostRanker.load("models:/aiobs-ranker@champion",  # what `aiobs direct --ranker` does
                                tracking_uri=settings.mlflow_tracking_uri)
    from features.extract import SCENE_FEATURES

    assert ranker.version and ranker.score(np.zeros((5, len(SCENE_FEATURES)), np.float32)).shape == (5,)


def test_study_resumes_and_the_second_run_is_judged_against_the_champion(platform):
    settings, _ = platform
    import optuna

    storage = default_resources(settings)["training"].optuna_storage
    before = len(optuna.load_study(study_name="aiobs-ranker", storage=storage).trials)
    res = run_graph(settings, trials=2)
    assert len(optuna.load_study(study_name="aiobs-ranker", storage=storage).trials) == before + 2
    ev = res.output_for_node("ranker_evaluation")["results"]
    assert "champion" in ev  # evaluated on the same held-out sessions as the new model
    reg = res.output_for_node("ranker_registration")
    assert reg["version"] == "2" and "champion" in reg["reason"]


def test_gate_refuses_a_worse_model_and_records_why(platform):
    settings, _ = platform
    from mlflow import MlflowClient

    from ranker.train import train_ranker

    with FeatureStore(settings.clickhouse_dsn) as store:
        data = load_ranking_data(store)
    train, held = split_by_session(data)
    rng = np.random.default_rng(0)
    train.y = train.y.copy()
    off = train.offsets
    for g in range(train.n_groups):  # labels shuffled within each tick: a model that learned nothing
        train.y[off[g]:off[g + 1]] = rng.permutation(train.y[off[g]:off[g + 1]])
    bad = train_ranker(train, rounds=30, model_version="shuffled")
    client = MlflowClient(settings.mlflow_tracking_uri)
    champ_before = str(client.get_model_version_by_alias("aiobs-ranker", CHAMPION).version)
    champion_metrics = evaluate(XGBoostRanker.load("models:/aiobs-ranker@champion",
                                                   tracking_uri=settings.mlflow_tracking_uri), held)
    reg = register(bad, tracking_uri=settings.mlflow_tracking_uri, artifacts_dir=settings.mlflow_artifacts_dir,
                   metrics=evaluate(XGBoostRanker(bad), held), reference=champion_metrics, reference_name="champion",
                   params={"shuffled": True}, gate=Gate(margin=0.02))
    assert not reg.promoted and reg.reason.startswith("stays challenger") and "cut_top1" in reg.reason
    assert str(client.get_model_version_by_alias("aiobs-ranker", CHAMPION).version) == champ_before
    assert str(client.get_model_version_by_alias("aiobs-ranker", CHALLENGER).version) == reg.version
    assert client.get_model_version("aiobs-ranker", reg.version).tags["gate"] == reg.reason


def test_asset_checks_fail_on_broken_data(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path)
    settings.ensure_dirs()
    with FeatureStore(settings.clickhouse_dsn) as store:
        simulate(store, 4, SimConfig(duration_s=120), seed=2)
        broken = store.frame("camera_ticks", sessions=["sim-2-00000"])
        broken["session_id"] = "broken"
        broken["schema_version"] = 99  # written by a future contract
        broken["speech_prob"] = np.nan  # a feature that should never be missing
        store.insert_frame("camera_ticks", broken)
        ov = store.frame("overrides", sessions=["sim-2-00000"])
        ov["session_id"] = "broken"
        store.insert_frame("overrides", ov)
    res = materialize([assets.training_dataset, *CHECKS], resources=default_resources(settings),
                      instance=DagsterInstance.ephemeral(), raise_on_error=False)
    checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
    assert not checks["dataset_schema_version"].passed
    assert not checks["dataset_null_rates"].passed
    assert "speech_prob" in checks["dataset_null_rates"].metadata["over_limit"].value


def test_new_labels_sensor_and_definitions(platform):
    settings, _ = platform
    defs = build_definitions(settings)
    assert defs.resolve_job_def("retrain_ranker") is not None
    assert len(list(defs.schedules)) == 1 and len(list(defs.sensors)) == 1
    res = default_resources(settings)
    ctx = build_sensor_context(resources={"clickhouse": res["clickhouse"]}, cursor=None)
    out = new_labels_sensor(ctx)
    assert out.run_key.startswith("labels-") and out.tags["trigger"] == "new_labels"
    ctx = build_sensor_context(resources={"clickhouse": res["clickhouse"]}, cursor=ctx.cursor)
    assert "new labels since the last run" in new_labels_sensor(ctx).skip_message


def test_ingest_asset_ships_the_spool(tmp_path):
    settings = load_settings(env={}, data_dir=tmp_path)
    settings.ensure_dirs()
    with SpoolWriter(settings.spool_dir, CAMERA_TICKS) as w:
        for i in range(25):
            w.append({"session_id": "live", "ts": 1_795_000_000 + i, "tick": i, "camera_id": "cam1"})
    res = materialize([assets.feature_log_ingest], resources=default_resources(settings),
                      instance=DagsterInstance.ephemeral(), partition_key="2026-11-18")
    mat = res.asset_materializations_for_node("feature_log_ingest")[0]
    assert mat.metadata["rows_shipped"].value == 25 and mat.metadata["camera_tick_rows_on_day"].value == 25


def test_training_through_xgboost_dask_on_a_local_cluster(platform):
    from distributed import Client, LocalCluster

    from ranker.train import train_ranker_dask

    settings, _ = platform
    with FeatureStore(settings.clickhouse_dsn) as store:
        data = load_ranking_data(store)
    train, held = split_by_session(data)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        booster = train_ranker_dask(client, train, rounds=40, model_version="dask", chunk_groups=3000)
    metrics = evaluate(XGBoostRanker(booster), held)
    assert metrics["cut_top1"] > 0.8


@pytest.mark.parametrize("name", ["ranker_exploration", "model_comparison"])
def test_notebooks_execute(name, platform, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    settings, _ = platform
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    # the exploration notebook opens ClickHouse: give it a data dir no other process holds (it simulates there);
    # the comparison notebook reads the platform's MLflow registry
    data_dir = tmp_path if name == "ranker_exploration" else settings.data_dir
    env_keys = {"AIOBS_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if name == "model_comparison":
        text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert "registered version(s)" in text


def test_dagster_loads_the_definitions_from_the_project_config(tmp_path):
    import subprocess

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "AIOBS_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    p = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-m",
                        "pipelines.definitions"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def test_optuna_trials_from_several_workers_share_one_study(platform, tmp_path):
    """Two worker processes optimise the same study through the shared RDB storage."""
    import pickle
    import subprocess

    import optuna

    settings, _ = platform
    with FeatureStore(settings.clickhouse_dsn) as store:
        data = load_ranking_data(store)
    train, _ = split_by_session(data)
    (tmp_path / "train.pkl").write_bytes(pickle.dumps(train.select_groups(np.isin(train.session,
                                                                                  train.sessions()[:6]))))
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    code = (f"import pickle; from ranker.train import tune; "
            f"d = pickle.load(open({str(tmp_path / 'train.pkl')!r}, 'rb')); "
            f"tune(d, n_trials=2, storage={storage!r}, study_name='shared', folds=2, seed=int(__import__('sys').argv[1]))")
    workers = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=ROOT) for i in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)


def test_model_manager_serves_champion_ab_challenger_and_hot_swaps(platform):
    from mlflow import MlflowClient

    from features.extract import SCENE_FEATURES
    from runtime.model_manager import ModelManager

    settings, _ = platform
    client = MlflowClient(settings.mlflow_tracking_uri)
    champion = str(client.get_model_version_by_alias("aiobs-ranker", CHAMPION).version)
    mm = ModelManager(settings.mlflow_tracking_uri, challenger_share=0.5)
    assert mm.variant("any") == "baseline"  # nothing loaded yet: the rule baseline directs
    versions = mm.refresh()
    assert versions[CHAMPION] == champion and mm.last_error is None
    arms = {s: mm.variant(s) for s in (f"session-{i}" for i in range(200))}
    assert set(arms.values()) == {CHAMPION, CHALLENGER} or versions[CHALLENGER] == versions[CHAMPION]
    assert all(mm.variant(s) == a for s, a in arms.items())  # deterministic per session
    arm, ranker = mm.ranker_for("session-1")
    assert ranker.score(np.zeros((5, len(SCENE_FEATURES)), np.float32)).shape == (5,)
    held = ranker  # a tick in progress keeps this object even if the alias moves now

    m = {"cut_top1": 0.0, "replay_frame_agreement": 0.0, "replay_ping_pong": 0, "replay_cuts_in_speech": 0}
    other = register(ranker.booster, tracking_uri=settings.mlflow_tracking_uri, params={"copy": True},
                     artifacts_dir=settings.mlflow_artifacts_dir, metrics=m, reference=m, reference_name="itself",
                     gate=Gate(margin=1.0)).version  # a new version, not promoted by the gate
    client.set_registered_model_alias("aiobs-ranker", CHAMPION, other)
    try:
        assert mm.refresh()[CHAMPION] == other  # hot-swapped between ticks
        assert mm._slots[CHAMPION].ranker is not held and held.score(np.zeros((5, len(SCENE_FEATURES)))).shape
    finally:
        client.set_registered_model_alias("aiobs-ranker", CHAMPION, champion)

    down = ModelManager("http://127.0.0.1:1", poll_s=0.1)
    assert down.refresh() == {CHAMPION: None, CHALLENGER: None}
    assert down.ranker_for("s")[0] == "baseline"  # an unreachable registry never stops the director
