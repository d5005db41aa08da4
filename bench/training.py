"""The learned-ranker pipeline at scale. Last line: one JSON object.

BENCH_ROWS camera-tick rows (default 1,000,000; the target is 5,000,000 = 1M ticks x 5 cameras) of simulated
sessions: ingest (simulate + insert into chDB), dataset (ASOF-labelled, streamed as Arrow), tune (BENCH_TRIALS Optuna
trials, default 30, on a session subsample with grouped CV), train (final model on every training session),
evaluate (learned vs rule baseline on held-out sessions, cut-point top-1 + policy replay) and register (MLflow).
Target on a 2-core CPU: 5M rows end to end < 15 min.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from features.store import FeatureStore  # noqa: E402
from ranker.baseline import WeightedBaselineRanker  # noqa: E402
from ranker.dataset import load_ranking_data, split_by_session  # noqa: E402
from ranker.evaluate import evaluate  # noqa: E402
from ranker.registry import register  # noqa: E402
from ranker.simulate import SimConfig, simulate  # noqa: E402
from ranker.train import best_params, train_ranker, tune  # noqa: E402
from ranker.xgb import XGBoostRanker  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
TRIALS = int(os.environ.get("BENCH_TRIALS", "30"))
TUNE_GROUPS = int(os.environ.get("BENCH_TUNE_GROUPS", "30000"))


def main() -> None:
    cfg = SimConfig(cameras=5, duration_s=300.0)
    per_session = int(cfg.duration_s * cfg.tick_hz) * cfg.cameras
    sessions = max(5, ROWS // per_session)
    stages = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(f"chdb://{tmp}/ch")
        t = time.perf_counter()
        counts = simulate(store, sessions, cfg, seed=7)
        stages["ingest_s"] = time.perf_counter() - t

        t = time.perf_counter()
        data = load_ranking_data(store)
        train, held = split_by_session(data)
        stages["dataset_s"] = time.perf_counter() - t
        store.close()

        t = time.perf_counter()
        study = tune(train, n_trials=TRIALS, storage=f"sqlite:///{tmp}/optuna.db", study_name="bench", folds=3,
                     mlflow_tracking_uri=None, max_groups=TUNE_GROUPS)
        params, rounds = best_params(study)
        stages["tune_s"] = time.perf_counter() - t

        t = time.perf_counter()
        booster = train_ranker(train, params, rounds, model_version="bench")
        stages["train_s"] = time.perf_counter() - t

        t = time.perf_counter()
        learned = evaluate(XGBoostRanker(booster), held)
        baseline = evaluate(WeightedBaselineRanker(), held)
        stages["evaluate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        reg = register(booster, tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifacts_dir=f"{tmp}/artifacts",
                       metrics=learned, reference=baseline, reference_name="baseline",
                       params={**params, "rounds": rounds})
        stages["register_s"] = time.perf_counter() - t

    total = sum(stages.values())
    result = {
        "rows": counts["camera_ticks"], "sessions": sessions, "train_groups": int(train.n_groups),
        "heldout_groups": int(held.n_groups), **{k: round(v, 1) for k, v in stages.items()},
        "total_s": round(total, 1), "trials": len(study.trials),
        "pruned": sum(1 for tr in study.trials if tr.state.name == "PRUNED"),
        "learned_cut_top1": round(learned["cut_top1"], 4), "baseline_cut_top1": round(baseline["cut_top1"], 4),
        "learned_replay_agreement": round(learned["replay_frame_agreement"], 4),
        "baseline_replay_agreement": round(baseline["replay_frame_agreement"], 4),
        "promoted": reg.promoted,
        "total_vs_15min_target_for_5M": round(900.0 / (total * 5_000_000 / max(1, counts["camera_ticks"])), 2),
    }
    print(f"{result['rows']:,} rows in {total:.0f} s; cut-point top-1 learned {result['learned_cut_top1']} vs "
          f"baseline {result['baseline_cut_top1']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
