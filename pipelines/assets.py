"""The learned-ranker assets: ingest -> dataset (+ checks) -> Optuna study -> model -> evaluation -> registration,
with the real-media evaluation set (real analysis of recorded conversations with ground truth) in the evaluation.

Logic lives in features/ and ranker/; these functions only wire it to Dagster (config, metadata, lineage).
"""


import json
from pathlib import Path

import numpy as np
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, Config, DailyPartitionsDefinition,
                     MaterializeResult, MetadataValue, Output, asset, asset_check)
from pydantic import ValidationError, model_validator

from features.extract import RANKER_FEATURES
from features.schema import SCHEMA_VERSION
from features.shipper import SegmentShipper
from runtime.realset import SESSIONS as REAL_SESSIONS

from .resources import ClickHouseResource, DirectorResource, MLflowResource, RealMediaResource, TrainingResource

DAILY = DailyPartitionsDefinition(start_date="2026-01-01")
# NULLs a row explains (its `degraded` map names the feature's stage, e.g. degraded["vlm"] = "no VLM configured") are
# expected and never counted. Limits on the UNEXPLAINED null rate, among the rows whose stage claims to have run: a VLM
# read is asynchronous and logs from before per-row reasons (and the simulator) leave some reads NULL without one;
# every other feature should always be present.
UNEXPLAINED_NULL_LIMIT = {"vlm_interest": 0.5, "vlm_age_s": 0.5}
DEFAULT_NULL_LIMIT = 0.01


@asset(partitions_def=DAILY, group_name="feature_log", description="Ship spooled feature-log segments into "
       "ClickHouse (in embedded mode this process owns the chDB path) and report the day's rows.")
def feature_log_ingest(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
    day = context.partition_key
    with clickhouse.store() as store:
        report = SegmentShipper(clickhouse.spool_dir, store).ship_once()
        if report.error:
            raise RuntimeError(f"ClickHouse unreachable, {report.pending} segment(s) stay spooled: {report.error}")
        rows = store.query_df(
            "SELECT count() AS n FROM camera_ticks WHERE toDate(ts) = toDate({day:String})", {"day": day})
    return MaterializeResult(metadata={
        "segments_shipped": report.segments, "rows_shipped": report.rows, "quarantined": len(report.quarantined),
        "camera_tick_rows_on_day": int(rows["n"].iloc[0]), "pending_segments": report.pending})


class DatasetConfig(Config):
    synthetic: bool | None = None  # None = real and synthetic sessions alike
    eval_percent: int = 20


@asset(group_name="ranker", deps=[feature_log_ingest], description="Ticks x cameras joined with the human's "
       "choice (ASOF join on overrides: a take while its camera is on program and the session supervised, a lock until "
       "its timeout, nothing after a release; see ranker.dataset), split by session into train / held-out.")
def training_dataset(context: AssetExecutionContext, config: DatasetConfig, clickhouse: ClickHouseResource):
    from ranker.dataset import load_ranking_data, split_by_session

    check_study_config(context)  # the retrain job's first step: the study's settings before minutes of work
    with clickhouse.store() as store:  # a fresh data dir gets its tables: an empty dataset, which the checks explain
        data = load_ranking_data(store, synthetic=config.synthetic)
    train, held_out = split_by_session(data, config.eval_percent) if data.n_groups else (data, data)
    meta = {"rows": int(len(data.y)), "groups": int(data.n_groups), "sessions": len(data.sessions()),
            "train_sessions": len(train.sessions()), "heldout_sessions": len(held_out.sessions()),
            "cut_points": int(data.cut_points.sum()), "schema_versions": str(sorted(data.schema_versions))}
    return Output({"all": data, "train": train, "heldout": held_out}, metadata=meta)


@asset_check(asset=training_dataset, blocking=True, description="enough labelled ticks and human cut points")
def dataset_row_counts(context, training_dataset) -> AssetCheckResult:
    d = training_dataset["all"]
    ok = d.n_groups >= 100 and d.cut_points.sum() >= 10 and training_dataset["heldout"].n_groups > 0
    why = (f"{d.n_groups:,} labelled ticks ({int(d.cut_points.sum())} human cut points) in {len(d.sessions())} "
           f"session(s), {training_dataset['heldout'].n_groups:,} of them held out; training needs >= 100 ticks, >= 10 "
           "cut points and a held-out session: label more (operators' overrides in `aiobs direct --operator` or live, "
           "`aiobs import`, or `aiobs simulate`)")
    return _verdict(context, bool(ok), why, metadata={"groups": int(d.n_groups), "cut_points": int(d.cut_points.sum())})


@asset_check(asset=training_dataset, blocking=True, description="feature NULLs (NaN) only where the rows say the "
             "feature's stage was off or degraded (the `degraded` map); unexplained NULL rates within limits")
def dataset_null_rates(context, training_dataset) -> AssetCheckResult:
    d = training_dataset["all"]
    rates, expected, unexplained = {}, {}, {}
    for i, f in enumerate(RANKER_FEATURES):
        null = np.isnan(d.X[:, i])
        off = d.expected_null(f)  # the row says this feature's stage was off: NULL is what it should be
        ran = ~off
        rates[f] = float(null.mean()) if len(null) else 0.0
        expected[f] = float((null & off).mean()) if len(null) else 0.0
        unexplained[f] = float((null & ran).sum() / ran.sum()) if ran.any() else 0.0
    bad = {f: round(r, 4) for f, r in unexplained.items() if r > UNEXPLAINED_NULL_LIMIT.get(f, DEFAULT_NULL_LIMIT)}
    why = f"features NULL where their stage ran, over the limit: {bad}"
    return _verdict(context, not bad, why, severity=AssetCheckSeverity.ERROR,
                            metadata={"over_limit": MetadataValue.json(bad),
                                      "null_rates": MetadataValue.json({k: round(v, 4) for k, v in rates.items()}),
                                      "expected_null_rates": MetadataValue.json(
                                          {k: round(v, 4) for k, v in expected.items()}),
                                      "unexplained_null_rates": MetadataValue.json(
                                          {k: round(v, 4) for k, v in unexplained.items()})})


@asset_check(asset=training_dataset, blocking=True, description="rows were written under this feature contract")
def dataset_schema_version(context, training_dataset) -> AssetCheckResult:
    versions = training_dataset["all"].schema_versions
    why = f"rows written under feature-schema versions {sorted(versions)}; this code reads 1..{SCHEMA_VERSION}"
    return _verdict(context, bool(versions) and max(versions) <= SCHEMA_VERSION and min(versions) >= 1, why,
                    metadata={"versions": str(sorted(versions)), "code_version": SCHEMA_VERSION})


@asset_check(asset=training_dataset, blocking=True, description="one human choice per tick; no camera dominates")
def dataset_label_balance(context, training_dataset) -> AssetCheckResult:
    d = training_dataset["all"]
    per_group = np.add.reduceat(d.y, d.offsets[:-1]) if d.n_groups else np.zeros(0)
    cams, counts = np.unique(d.human, return_counts=True)
    share = {c: round(float(n) / max(1, d.n_groups), 4) for c, n in zip(cams, counts)}
    ok = d.n_groups > 0 and bool((per_group == 1).all()) and max(share.values(), default=1.0) <= 0.9
    why = ("no labelled ticks" if not d.n_groups else
           f"{int((per_group != 1).sum())} tick(s) without exactly one human choice; the human's share per camera "
           f"{share} (no camera may take over 0.9)")
    return _verdict(context, ok, why, metadata={"chosen_share": MetadataValue.json(share),
                                                "groups_without_one_label": int((per_group != 1).sum())})


def _verdict(context, passed: bool, why: str, **kwargs) -> AssetCheckResult:
    """A dataset check's result; a failure says why in the run's log (the terminal of `./dev.sh retrain`) and in
    the check's description, not only in its metadata."""
    if not passed:
        context.log.error(f"dataset check {context.check_specs[0].name} failed: {why}")
    return AssetCheckResult(passed=bool(passed), description=None if passed else why[:1000], **kwargs)


class RealMediaConfig(Config):
    sessions: list[str] = list(REAL_SESSIONS)  # runtime/realset.py


@asset(group_name="ranker", description="The real-media evaluation set of the promotion gate: recorded "
       "conversations (other voices, layouts and turn patterns than the demo) through the REAL analysis, with their "
       "ground truth; analysed once and cached (runtime/realset.py).")
def real_media_set(context: AssetExecutionContext, config: RealMediaConfig, real_media: RealMediaResource):
    from runtime.realset import real_sessions

    check_study_config(context)  # (beside training_dataset: a bad study setting ends the run before minutes of work)
    sessions = real_sessions(real_media.realset_dir, config.sessions, real_media.yolo_model or None,
                             progress=context.log.info)
    return Output(sessions, metadata={"sessions": len(sessions), "names": ", ".join(s.name for s in sessions),
                                      "ticks": sum(int(s.camera_ticks["tick"].nunique()) for s in sessions),
                                      "cached_in": real_media.realset_dir})


class StudyConfig(Config):
    study_name: str = "aiobs-ranker"
    n_trials: int = 30
    folds: int = 3
    max_groups: int = 50_000  # ticks a tuning fit draws on: with more, every cut point and every k-th steady tick
    seed: int = 0
    tune_policy: bool = True  # tune the policy's timing (minimum hold, cooldown, delta, dwell) with the ranker
    # JSON overriding entries of ranker.train.SEARCH_SPACE, e.g. '{"max_depth": [4, 10], "objective": ["rank:ndcg"]}'
    search_space: str = ""
    features: list[str] = []  # a subset of the ranker features to learn from (empty = all of them)
    # replays that search the policy timing alone for the best trial's ranker (seconds each, where a trial is a
    # minute); -1 = ranker/train.py's REFINE_SEARCH_TRIALS
    timing_trials: int = -1
    # ticks that search replays: the opening stretch of held-out sessions of every fold (as many as leave each 500
    # ticks, when the budget allows), scored by the fold model that did not train on them; 0 = as many as a trial
    # replays (15,000). More ticks cost replay time (ranker/train.py _refine_timing: the measured figures)
    timing_replay_ticks: int = 0

    @model_validator(mode="after")
    def _checked(self):
        """The study's arguments as `tune` checks them (ranker/train.py check_study_args), at once."""
        from ranker.train import check_study_args

        if self.timing_trials < -1:
            raise ValueError(f"timing_trials must be 0 or more (or -1 for the default), not {self.timing_trials}")
        if self.timing_replay_ticks < 0:
            raise ValueError(f"timing_replay_ticks must be 0 (the default) or more, not {self.timing_replay_ticks}")
        check_study_args(n_trials=self.n_trials, folds=self.folds, max_groups=self.max_groups, space=self.space(),
                         features=self.features or None,
                         timing_trials=None if self.timing_trials < 0 else self.timing_trials,
                         timing_replay_groups=self.timing_replay_ticks or None)
        return self

    def space(self) -> dict | None:
        """`search_space` read as JSON (None when empty)."""
        try:
            return json.loads(self.search_space) if self.search_space.strip() else None
        except json.JSONDecodeError as e:
            raise ValueError(f"search_space is not JSON ({e}): {self.search_space!r}") from None


def check_study_config(context: AssetExecutionContext) -> None:
    """The retrain run's ranker_study config, checked in the job's first steps (training_dataset and real_media_set,
    which run side by side): a bad value fails the run in seconds with the field's name, not after the dataset and
    the real-media set were built. A value given as `{env: VAR}` is read from the environment, as Dagster reads it."""
    import os

    given = (((context.run.run_config or {}).get("ops") or {}).get("ranker_study") or {}).get("config") or {}
    values = {}
    for k, v in given.items():
        if isinstance(v, dict) and set(v) == {"env"}:
            if v["env"] not in os.environ:
                continue  # (Dagster itself says that the variable is not set)
            v = os.environ[v["env"]]
        values[k] = v
    try:
        StudyConfig(**values)
    except ValidationError as e:
        why = [".".join(map(str, err["loc"])) + (": " if err["loc"] else "")
               + str(err["msg"]).removeprefix("Value error, ") for err in e.errors()]
        raise ValueError("ranker_study config: " + "; ".join(why)) from None


@asset(group_name="ranker", description="Optuna study (TPE, pruning, grouped CV by session) over XGBoost "
       "learning-to-rank parameters AND the switching policy's timing, jointly: objective = mean of cut-point top-1 "
       "and the replay frame agreement with the human program, and a trial the gate would refuse on the real-media "
       "set scores 1 lower; persisted in an RDB so it resumes; trials logged to MLflow.")
def ranker_study(context: AssetExecutionContext, config: StudyConfig, training_dataset, real_media_set,
                 training: TrainingResource, mlflow: MLflowResource, director: DirectorResource) -> Output:
    from ranker.train import best_params, best_policy, tune

    space = config.space()
    study = tune(training_dataset["train"], n_trials=config.n_trials, storage=training.optuna_storage,
                 study_name=config.study_name, folds=config.folds, seed=config.seed,
                 mlflow_tracking_uri=mlflow.tracking_uri, mlflow_artifacts_dir=mlflow.artifacts_dir,
                 max_groups=config.max_groups, policy=director.policy(), tick_s=director.tick_s,
                 tune_policy=config.tune_policy, space=space, features=config.features or None,
                 progress=context.log.info, real=real_media_set,
                 timing_trials=None if config.timing_trials < 0 else config.timing_trials,
                 timing_replay_groups=config.timing_replay_ticks or None)
    params, rounds = best_params(study)
    policy = best_policy(study)
    states = [t.state.name for t in study.trials]
    best = study.best_trial.user_attrs
    return Output({"params": params, "rounds": rounds, "best_value": study.best_value, "policy": policy,
                   "features": config.features or None, "study": study.study_name},
                  metadata={"study": study.study_name, "resumed": bool(study.user_attrs.get("resumed")),
                            "trials": len(study.trials), "pruned": states.count("PRUNED"),
                            # what the fits drew on: every session, every cut point, one steady tick in the stride
                            **{k: int(study.user_attrs[k]) for k in ("tune_sessions", "tune_groups",
                                                                     "available_groups", "steady_stride")
                               if study.user_attrs.get(k) is not None},
                            "best_objective": round(float(study.best_value), 4),
                            "best_cv_cut_top1": round(float(best.get("cut_top1", study.best_value)), 4),
                            **({"best_replay_agreement": round(float(best["replay_agreement"]), 4)}
                               if "replay_agreement" in best else {}),
                            "best_params": MetadataValue.json(params),
                            "learned_policy": MetadataValue.json(policy or {}), "rounds": rounds})


@asset(group_name="ranker", description="The final XGBoost ranker, trained on every training session with the "
       "study's best parameters (through xgboost.dask when a Dask scheduler is configured), stamped with the tuned "
       "policy timing that keeps the gate's real-media rule for THIS model: the best-agreeing tuned timing that does "
       "(one real-media replay each, about a second), else none (the front door's). So its `learned_policy` may "
       "differ from the study's, which a fold's model judged.")
def ranker_model(context: AssetExecutionContext, training_dataset, ranker_study, real_media_set,
                 training: TrainingResource, director: DirectorResource):
    import optuna

    from ranker.train import keep_real_rule, train_ranker, train_ranker_dask

    version = f"xgb-{context.run_id[:8]}"
    train = training_dataset["train"]
    if training.dask_scheduler:
        from distributed import Client

        with Client(training.dask_scheduler) as client:
            booster = train_ranker_dask(client, train, ranker_study["params"], ranker_study["rounds"], version,
                                        policy=ranker_study.get("policy"))
    else:
        booster = train_ranker(train, ranker_study["params"], ranker_study["rounds"], model_version=version,
                               policy=ranker_study.get("policy"), features=ranker_study.get("features"))
    # the timing it ships with keeps the gate's real-media rule for THIS model (the tuning checked a fold's model)
    study = optuna.load_study(study_name=ranker_study["study"], storage=training.optuna_storage)
    policy = keep_real_rule(booster, study, real_media_set, director.policy(), director.tick_s,
                            progress=context.log.warning)
    path = Path(training.work_dir) / f"{version}.ubj"
    booster.save_model(path)
    return Output({"path": str(path), "version": version, "policy": policy},
                  metadata={"model_file": str(path), "trees": booster.num_boosted_rounds(),
                            "trained_on_groups": int(train.n_groups),
                            "learned_policy": MetadataValue.json(policy or {})})


class EvalConfig(Config):
    plots: bool = True


@asset(group_name="ranker", description="Held-out evaluation of the new model, the current champion and the rule "
       "baseline: cut-point top-1 and NDCG, and a replay through the switching policy.")
def ranker_evaluation(context: AssetExecutionContext, config: EvalConfig, training_dataset, ranker_model,
                      real_media_set, training: TrainingResource, mlflow: MLflowResource, director: DirectorResource):
    from ranker.baseline import WeightedBaselineRanker
    from ranker.evaluate import evaluate, evaluate_real, plots
    from ranker.registry import champion_uri, has_alias
    from ranker.xgb import XGBoostRanker

    held = training_dataset["heldout"]
    policy, tick_s = director.policy(), director.tick_s  # what production runs: the gate judges under it

    real: dict[str, dict] = {}

    def run(ranker, who: str):  # a model that carries learned policy timing is judged under it, as production directs
        m = evaluate(ranker, held, policy.with_tuned(getattr(ranker, "policy", None)), tick_s)
        r = evaluate_real(ranker, real_media_set, policy)  # the real analysis of recorded conversations
        real[who] = {k: v for k, v in r.items() if k != "real_per_session"}
        real[who]["per_session"] = r["real_per_session"]
        return {**m, **{k: v for k, v in r.items() if k != "real_per_session"}}

    learned = XGBoostRanker.load(ranker_model["path"])
    results = {"learned": run(learned, "learned"), "baseline": run(WeightedBaselineRanker(), "baseline")}
    # a champion that exists but cannot be evaluated blocks promotion (ranker_registration): never fall back to
    # judging the new model against the baseline alone
    champion_error = None
    try:
        exists = has_alias(mlflow.tracking_uri, "champion")
    except Exception as e:  # noqa: BLE001 - the registry cannot say whether a champion exists
        exists, champion_error = False, f"cannot tell whether a champion exists: {_first_line(e)}"
    if exists:
        try:
            results["champion"] = run(XGBoostRanker.load(champion_uri(), tracking_uri=mlflow.tracking_uri),
                                      "champion")
        except Exception as e:  # noqa: BLE001 - RankerError (artifact, feature contract) or a failing evaluation
            champion_error = _first_line(e)
    if champion_error:
        context.log.warning(f"champion could not be evaluated, promotion is blocked: {champion_error}")
    paths = plots(learned.booster, learned, held, Path(training.work_dir) / f"plots-{ranker_model['version']}") \
        if config.plots else {}
    meta = {f"{who}_{k}": round(float(v), 4) for who, r in results.items() for k, v in r.items()
            if k in ("cut_top1", "ndcg1_cut", "ndcg3_cut", "replay_frame_agreement", "replay_cut_time_error_s",
                     "replay_switches_per_min", "replay_ping_pong", "replay_cuts_in_speech", "real_speaker_follow",
                     "real_mid_word_cuts", "real_switches_per_min", "replay_cut_recall") and np.isfinite(v)}
    # what the humans did on the same sessions, beside the models' figures
    meta["human_switches_per_min"] = round(float(results["learned"]["human_switches_per_min"]), 3)
    meta["human_cut_points"] = int(results["learned"]["cut_points"])
    for name, p in paths.items():
        meta[f"plot_{name}"] = MetadataValue.path(p)
    if paths:  # the plots themselves, in the asset page (a data URI per plot)
        meta["plots"] = MetadataValue.md("\n\n".join(f"**{name.replace('_', ' ')}**\n\n![{name}]({_data_uri(p)})"
                                                      for name, p in paths.items()))
    meta["comparison"] = MetadataValue.md(_table(results))
    meta["policy_config"] = MetadataValue.json(json.loads(director.policy_json))
    meta["learned_policy"] = MetadataValue.json(learned.policy or {})
    if champion_error:
        meta["champion_error"] = champion_error
    meta["real_media"] = MetadataValue.md(_real_table(real))
    return Output({"results": results, "plots": paths, "champion_error": champion_error, "real": real},
                  metadata=meta)


class RegistrationConfig(Config):
    margin: float = 0.02  # required cut-point top-1 gain, capped at headroom_share * (1 - reference): see Gate
    headroom_share: float = 0.5
    max_agreement_drop: float = 0.0


@asset(group_name="ranker", description="Register in MLflow (signature, feature-schema version, metrics), alias "
       "challenger, and promote to champion only if the gate passes (a champion that could not be evaluated blocks "
       "promotion); the reason is recorded.")
def ranker_registration(context: AssetExecutionContext, config: RegistrationConfig, ranker_model, ranker_evaluation,
                        ranker_study, training_dataset, mlflow: MLflowResource, director: DirectorResource):
    from ranker.registry import MODEL_NAME, Gate, git_revision, register
    from ranker.xgb import XGBoostRanker

    res = ranker_evaluation["results"]
    champion_error = ranker_evaluation.get("champion_error")
    reference_name = "champion" if "champion" in res else "baseline"
    learned = XGBoostRanker.load(ranker_model["path"])
    reg = register(learned.booster, tracking_uri=mlflow.tracking_uri,
                   artifacts_dir=mlflow.artifacts_dir, metrics=res["learned"], reference=res[reference_name],
                   reference_name=reference_name, params={**ranker_study["params"], "rounds": ranker_study["rounds"]},
                   plots=ranker_evaluation["plots"],
                   policy_config={**json.loads(director.policy().with_tuned(learned.policy).to_json()),
                                  "tick_s": director.tick_s},
                   gate=Gate(margin=config.margin, headroom_share=config.headroom_share,
                             max_agreement_drop=config.max_agreement_drop),
                   champion_error=champion_error, real=ranker_evaluation.get("real"),
                   run_tags={"optuna.study": str(ranker_study.get("study", "")), "dagster.run_id": context.run_id,
                             "git.revision": git_revision()},
                   data_info={"train_sessions": len(training_dataset["train"].sessions()),
                              "heldout_sessions": len(training_dataset["heldout"].sessions())})
    aliases = "champion + challenger" if reg.promoted else "challenger"
    context.log.info(f"retrain: {MODEL_NAME} version {reg.version} {'PROMOTED' if reg.promoted else 'not promoted'} "
                     f"(aliases now {aliases}): {reg.reason}")
    return Output({"version": reg.version, "promoted": reg.promoted, "reason": reg.reason, "uri": reg.model_uri},
                  metadata={"model_version": reg.version, "promoted": reg.promoted, "gate": reg.reason,
                            "mlflow_run_id": reg.run_id, "model_uri": reg.model_uri,
                            **({"champion_error": champion_error} if champion_error else {})})


def _data_uri(path: str) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _real_table(real: dict) -> str:
    """Per real-media session: speaker follow / mid-word cuts / switches per min of each evaluated ranker."""
    who = list(real)
    sessions = sorted({s for r in real.values() for s in r.get("per_session", {})})
    head = "| session | " + " | ".join(who) + " |\n|---|" + "---|" * len(who) + "\n"
    rows = []
    for s in sessions:
        cells = []
        for w in who:
            m = real[w]["per_session"].get(s, {})
            f = m.get("speaker_follow")
            cells.append(f"follow {f:.2f}, mid-word {m.get('mid_word_cuts')}, {m.get('switches_per_min', 0):.1f}/min"
                         if f is not None else "-")
        rows.append(f"| {s} | " + " | ".join(cells) + " |\n")
    return head + "".join(rows)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _table(results: dict) -> str:
    """Every evaluated ranker's figures side by side, and the human director's where the metric has one."""
    keys = ["cut_top1", "ndcg1_cut", "ndcg3_cut", "replay_frame_agreement", "replay_cut_time_error_s",
            "replay_cut_recall", "replay_switches_per_min", "replay_ping_pong", "replay_cuts_in_speech",
            "real_speaker_follow", "real_mid_word_cuts", "real_switches_per_min"]
    any_result = next(iter(results.values()))
    human = {"replay_switches_per_min": any_result.get("human_switches_per_min"), "replay_cut_recall": 1.0,
             "replay_frame_agreement": 1.0}

    def cell(v):
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| metric | " + " | ".join(results) + " | human |\n|---|" + "---|" * (len(results) + 1) + "\n"
    return head + "".join(f"| {k} | " + " | ".join(cell(results[w].get(k)) for w in results)
                          + f" | {cell(human.get(k))} |\n" for k in keys)



class ABReportConfig(Config):
    auto_promote: bool = False  # off = recommend only
    auto_rollback: bool = True
    rollback_rise: float = 0.25  # a champion's live override rate this much above its predecessor's: roll back
    min_sessions: int = 5  # per arm
    min_minutes: float = 10.0  # per arm
    n_boot: int = 2000
    window_days: int = 1  # the partition's day, and this many days back in all
    guardrail_tolerance: float = 0.10  # a guardrail blocks when worse beyond its interval by > 10 % of the champion


@asset(partitions_def=DAILY, group_name="ab", deps=[feature_log_ingest], description="A/B from live evidence: per "
       "arm (champion, challenger) operator overrides per minute (primary), overruled air time, switches, "
       "ping-pong and mid-word cuts per minute, with bootstrap 95% intervals by session and a minimum-sample rule; "
       "rolls back a champion whose live override rate rose since it took over and promotes the challenger when "
       "the primary metric improves beyond its interval and no guardrail is worse (auto_promote; off = recommend). "
       "Plots here and as MLflow artifacts on the challenger's version.")
def ab_report(context: AssetExecutionContext, config: ABReportConfig, clickhouse: ClickHouseResource,
              mlflow: MLflowResource) -> MaterializeResult:
    import tempfile
    from datetime import datetime, timedelta, timezone

    from ranker.ab import ABConfig, evaluate_live, plot

    day = datetime.strptime(context.partition_key, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    start, end = day - timedelta(days=max(1, config.window_days) - 1), day + timedelta(days=1)
    cfg = ABConfig(min_sessions=config.min_sessions, min_minutes=config.min_minutes, n_boot=config.n_boot,
                   auto_promote=config.auto_promote, rollback_rise=config.rollback_rise,
                   auto_rollback=config.auto_rollback, guardrail_tolerance=config.guardrail_tolerance)
    with clickhouse.store() as store:
        res = evaluate_live(store, mlflow.tracking_uri, cfg, start.timestamp(), end.timestamp(),
                            who=f"dagster ab_report {context.run_id[:8]}")
    rep = res["report"]
    for line in res["actions"]:
        context.log.info(f"ab_report: {line}")
    meta = {"recommendation": rep.recommendation, "reason": rep.reason, "enough_evidence": rep.enough,
            "sessions": MetadataValue.json(rep.sessions), "minutes": MetadataValue.json(rep.minutes),
            "actions": MetadataValue.json(res["actions"]), "report": MetadataValue.json(rep.as_dict())}
    if "rollback_check" in res:
        meta["rollback_check"] = res["rollback_check"]
    if rep.metrics:
        with tempfile.TemporaryDirectory() as tmp:
            png = plot(rep, Path(tmp) / f"ab_{context.partition_key}.png")
            meta["metrics"] = MetadataValue.md(rep.table())
            meta["plot"] = MetadataValue.md(f"![A/B]({_data_uri(png)})")
            version = res.get("challenger_version") or _arm_version(res["outcomes"], "challenger")
            if version:
                meta["mlflow_artifacts"] = _log_ab_artifacts(mlflow.tracking_uri, version, png, rep,
                                                             context.partition_key)
    return MaterializeResult(metadata=meta)


def _arm_version(outcomes, arm: str) -> str | None:
    v = outcomes[outcomes["variant"] == arm]["model_version"].value_counts()
    return v.index[0].rsplit("/", 1)[-1] if len(v) and "/" in v.index[0] else None


def _log_ab_artifacts(tracking_uri: str, version: str, png: str, rep, day: str) -> str:
    """The plot and the report (JSON) on the run of the challenger's model version, under ab_report/<day>/."""
    from ranker.registry import MODEL_NAME, registry_client

    client = registry_client(tracking_uri)
    run_id = client.get_model_version(MODEL_NAME, version).run_id
    client.log_artifact(run_id, png, f"ab_report/{day}")
    client.log_text(run_id, json.dumps(rep.as_dict(), indent=1), f"ab_report/{day}/report.json")
    return f"runs:/{run_id}/ab_report/{day}"
