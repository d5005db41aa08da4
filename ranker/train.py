"""Training and tuning the XGBoost learning-to-rank model.

- `train_ranker`: one booster on RankingData (groups = ticks; human cut points weighted up), stamped with its
  feature contract so the runtime can refuse a mismatch.
- `tune`: an Optuna study (TPE sampler, median pruner, pruning inside XGBoost through optuna-integration's callback,
  asked every PRUNE_EVERY rounds)
  over grouped cross-validation by session, persisted in an RDB storage (resumable, shareable by many workers), each
  trial logged to MLflow when a tracking URI is given. It tunes the ranker's parameters and the switching policy's
  timing (`ranker.policy.TUNED_FIELDS`: minimum hold, cooldown, delta, dwell, holding the speaker, the ping-pong
  window, following every turn) JOINTLY, against what the gate judges: the objective is the mean of cut-point top-1
  (over the folds) and the replay frame agreement with the human program (the held-out fold's sessions replayed
  through the director core under the trial's policy). Both are recorded per trial (`cut_top1`, `replay_agreement`
  user attributes, MLflow metrics).
- `train_ranker_dask`: the same training on a Dask cluster through `xgboost.dask`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from typing import Any

import numpy as np
import xgboost as xgb

from features.extract import RANKER_FEATURES

from .dataset import RankingData
from .xgb import stamp_booster

log = logging.getLogger(__name__)

BASE_PARAMS: dict[str, Any] = {
    "objective": "rank:pairwise",
    "eval_metric": "ndcg@1",
    "tree_method": "hist",
    "nthread": os.cpu_count() or 2,
    "verbosity": 0,
}
DEFAULT_PARAMS: dict[str, Any] = {"max_depth": 6, "eta": 0.1, "min_child_weight": 1.0, "subsample": 0.9,
                                  "colsample_bytree": 0.9, "lambda": 1.0}
DEFAULT_ROUNDS = 200


def dmatrix(data: RankingData, cut_weight: float = 5.0, cut_points_only: bool = False,
            features: list[str] | None = None, steady_weight: float = 1.0) -> xgb.DMatrix:
    """Group-aware DMatrix on `features` (default all RANKER_FEATURES); human cut-point groups weigh `cut_weight`,
    steady ticks `steady_weight` (more than 1 where they stand for ticks left out)."""
    d = data.select_groups(data.cut_points) if cut_points_only else data
    names = list(features) if features else list(RANKER_FEATURES)
    m = xgb.DMatrix(d.X[:, _feature_index(features)], label=d.y, feature_names=names, missing=np.nan)
    m.set_group(d.group_sizes)
    if not cut_points_only:
        m.set_weight(np.where(d.cut_points, cut_weight, steady_weight).astype(np.float32))
    return m


def train_ranker(train: RankingData, params: dict | None = None, rounds: int = DEFAULT_ROUNDS,
                 valid: RankingData | None = None, model_version: str = "", callbacks=None,
                 early_stopping_rounds: int | None = None, policy: dict | None = None,
                 features: list[str] | None = None, steady_stride: int = 1) -> xgb.Booster:
    """One booster on `features` (default all RANKER_FEATURES; the model records which: the runtime feeds it those);
    `policy` = the policy timing learned with it (stamped into the model: the director core applies it).

    `steady_stride` k > 1 (tuning on many rows, `tune`): every human cut point is kept, of the steady ticks between
    them only every k-th, weighted k, so the fit costs about 1/k and sees every session."""
    p = {**BASE_PARAMS, **DEFAULT_PARAMS, **(params or {})}
    train = train.led(float(p.pop("label_lead_s", 0.0)))  # the target leads the human's reaction (dataset.py)
    cut_weight = p.pop("cut_weight", 5.0)
    steady_weight = 1.0
    if steady_stride > 1 and train.n_groups:
        train = train.select_groups(train.thinned(steady_stride))
        steady_weight = float(steady_stride)
    dtrain = dmatrix(train, cut_weight=cut_weight, features=features, steady_weight=steady_weight)
    evals = [(dmatrix(valid, cut_points_only=True, features=features), "validation")] \
        if valid is not None and valid.n_groups else []
    booster = xgb.train(p, dtrain, num_boost_round=rounds, evals=evals, callbacks=callbacks or None,
                        early_stopping_rounds=early_stopping_rounds if evals else None, verbose_eval=False)
    if evals and early_stopping_rounds and booster.best_iteration is not None:
        booster = booster[: booster.best_iteration + 1]
    return stamp_booster(booster, list(features) if features else list(RANKER_FEATURES), model_version, policy=policy)


def session_folds(data: RankingData, k: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold by session: (train group mask, validation group mask) pairs."""
    sessions = np.array(data.sessions())
    k = max(2, min(k, len(sessions)))
    fold_of = {s: i % k for i, s in enumerate(sessions)}
    f = np.array([fold_of[s] for s in data.session])
    return [(f != i, f == i) for i in range(k)]


# The XGBoost search space: name -> [low, high] (a range; "log" in a third place = log scale, or a step > 0 as a
# third number), a list of choices (`objective`'s strings) or one value ([x]: fixed). `max_depth` and `rounds` are
# whole numbers, the rest real numbers. A study's run config may override any entry (`search_space`), e.g.
# {"max_depth": [4, 10], "objective": ["rank:ndcg"]}; an unknown name or a malformed entry is an error.
SEARCH_SPACE: dict[str, list] = {
    "max_depth": [3, 8],
    "eta": [0.03, 0.3, "log"],
    "min_child_weight": [0.5, 20.0, "log"],
    "subsample": [0.6, 1.0],
    "colsample_bytree": [0.5, 1.0],
    "lambda": [1e-3, 10.0, "log"],
    "objective": ["rank:pairwise", "rank:ndcg"],
    "cut_weight": [1.0, 20.0, "log"],
    "label_lead_s": [0.0, 1.6],  # train on the human's choice this much later (RankingData.led)
    "rounds": [50, 300, 50],
}
WHOLE_PARAMS = ("max_depth", "rounds")
CHOICE_PARAMS = ("objective",)


def search_space(overrides: dict | None = None) -> dict[str, list]:
    """SEARCH_SPACE with `overrides` applied; ValueError names an unknown parameter or a malformed entry."""
    space = {**SEARCH_SPACE}
    for k, v in (overrides or {}).items():
        if k not in SEARCH_SPACE:
            raise ValueError(f"search space: unknown parameter {k!r}; known: {sorted(SEARCH_SPACE)}")
        space[k] = _checked_entry(k, v)
    return space


def _checked_entry(name: str, spec) -> list:
    """One search-space entry as `_suggest_one` reads it, or ValueError saying what is wrong with it."""
    def number(x):
        try:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and bool(np.isfinite(x))
        except (OverflowError, TypeError):  # an integer too large for a float
            return False

    if not isinstance(spec, (list, tuple)) or not spec:
        raise ValueError(f"search space {name}: give [low, high] (optionally 'log' or a step) or one value [x]")
    spec = list(spec)
    if name in CHOICE_PARAMS:
        if not all(isinstance(x, str) for x in spec):
            raise ValueError(f"search space {name}: a list of choices (strings), not {spec!r}")
        return spec
    whole = name in WHOLE_PARAMS
    kind = "whole numbers" if whole else "numbers"
    if not all(number(x) and (not whole or float(x).is_integer()) for x in spec[:2]):
        raise ValueError(f"search space {name}: its bounds are {kind}, not {spec!r}")
    if len(spec) == 1:
        return [int(spec[0]) if whole else spec[0]]
    lo, hi, *extra = spec
    if whole:
        lo, hi = int(lo), int(hi)
    if lo > hi or len(extra) > 1:
        raise ValueError(f"search space {name}: {spec!r} is not a range [low, high] with low <= high, optionally "
                         f"'log' or a step")
    if extra and extra[0] == "log":
        if lo <= 0:
            raise ValueError(f"search space {name}: a log range needs low > 0, not {spec!r}")
    elif extra:
        step = extra[0]
        if not number(step) or step <= 0 or (whole and not float(step).is_integer()):
            raise ValueError(f"search space {name}: the third entry of {spec!r} is 'log' or a step, a "
                             f"{'whole ' if whole else ''}number > 0")
        if hi > lo and step > hi - lo:  # e.g. [3, 5, 7] meant as three choices: 3..5 in steps of 7 is just 3
            raise ValueError(f"search space {name}: the step of {spec!r} is larger than the range; a range with a "
                             f"step is [low, high, step] (lists of numeric choices are not supported)")
        extra = [int(step) if whole else float(step)]
    return [lo, hi, *extra]


def _suggest_one(trial, name: str, spec: list):
    if name in CHOICE_PARAMS or len(spec) == 1:
        return trial.suggest_categorical(name, list(spec))
    lo, hi, *extra = spec
    log = bool(extra and extra[0] == "log")
    step = None if log or not extra else extra[0]
    if name in WHOLE_PARAMS:
        return trial.suggest_int(name, int(lo), int(hi), step=int(step or 1), log=log)
    return trial.suggest_float(name, float(lo), float(hi), log=log, step=step)


def suggest(trial, space: dict[str, list] | None = None) -> tuple[dict, int]:
    space = space or SEARCH_SPACE
    params = {k: _suggest_one(trial, k, spec) for k, spec in space.items() if k != "rounds"}
    return params, int(_suggest_one(trial, "rounds", space["rounds"]))


POLICY_PREFIX = "policy."
# the learned policy timing's search space (ranker.policy.TUNED_FIELDS), seconds or score units
POLICY_SPACE: dict[str, tuple] = {"min_hold_s": (0.8, 5.0), "cooldown_s": (0.5, 6.0), "delta": (0.02, 0.4),
                                  "dwell_s": (0.0, 1.5), "hold_speaker": (True, False),
                                  "pingpong_window_s": (0.5, 10.0), "follow_every_turn": (True, False)}


def suggest_policy(trial) -> dict[str, float | bool]:
    return {k: trial.suggest_categorical(POLICY_PREFIX + k, list(space)) if isinstance(space[0], bool)
            else trial.suggest_float(POLICY_PREFIX + k, *space) for k, space in POLICY_SPACE.items()}


def timing_of(params: dict) -> dict[str, float | bool]:
    """The policy timing in a trial's params (`policy.<field>` -> TUNED_FIELDS names); {} when it has none."""
    return {k[len(POLICY_PREFIX):]: v if isinstance(v, bool) else float(v)
            for k, v in params.items() if k.startswith(POLICY_PREFIX)}


class _TimingJudge:
    """What a (ranker, timing) pair is judged on while tuning, written once for the trials and the refinement: replay
    agreement with the human program on `replayed` and, with `real`, the gate's real-media rule against the rule
    baseline (`Gate.check_real`), both under `base_policy` with the timing applied."""

    def __init__(self, replayed: RankingData | None, base_policy, tick_s: float, idx, real=None):
        self.replayed, self.base_policy, self.tick_s, self.idx, self.real = replayed, base_policy, tick_s, idx, real
        self.real_baseline = None
        self._replayer = None
        if self.replays:  # every trial and every refined timing replays the same sessions: their inputs built once
            from .evaluate import Replayer

            self._replayer = Replayer(replayed, tick_s, cache=True)
        if real:
            from .baseline import WeightedBaselineRanker
            from .evaluate import evaluate_real

            self.real_baseline = evaluate_real(WeightedBaselineRanker(), real, base_policy)

    def on(self, replayed: RankingData) -> "_TimingJudge":
        """The same judge replaying other sessions (the real-media baseline is not evaluated again)."""
        import copy

        other = copy.copy(self)
        other.replayed = replayed
        if other.replays:
            from .evaluate import Replayer

            other._replayer = Replayer(replayed, self.tick_s, cache=True)
        return other

    @property
    def replays(self) -> bool:
        return self.replayed is not None and self.replayed.n_groups > 0

    def agreement(self, booster, timing: dict | None, scores: np.ndarray | None = None) -> float:
        if scores is None:
            scores = np.asarray(booster.inplace_predict(self.replayed.X[:, self.idx]), np.float64)
        return float(self._replayer.run(scores, self.base_policy.with_tuned(timing)).frame_agreement)

    def real_rule(self, booster, timing: dict | None) -> tuple[float, list[str]]:
        """(real-media speaker follow, the rule's problems: [] = kept)."""
        from .evaluate import evaluate_real
        from .registry import Gate
        from .xgb import XGBoostRanker

        mine = evaluate_real(XGBoostRanker(booster), self.real, self.base_policy.with_tuned(timing))
        return float(mine["real_speaker_follow"]), Gate().check_real(mine, {"baseline": self.real_baseline})


def incumbent_timing(policy) -> dict[str, float | bool]:
    """`policy`'s TUNED_FIELDS as trial params (`policy.<field>`), clipped into POLICY_SPACE: what `tune` enqueues as
    a new study's first trial."""
    out = {}
    for k, space in POLICY_SPACE.items():
        v = getattr(policy, k)
        out[POLICY_PREFIX + k] = bool(v) if isinstance(space[0], bool) else float(min(max(v, space[0]), space[1]))
    return out


def _replay_sessions(data: RankingData, max_groups: int) -> RankingData:
    """Whole sessions of `data`, in order, up to about `max_groups` ticks: what one trial replays."""
    keep, total = [], 0
    per = dict(zip(*np.unique(data.session, return_counts=True)))
    for s in data.sessions():
        if keep and total + per[s] > max_groups:
            break
        keep.append(s)
        total += int(per[s])
    return data.select_groups(np.isin(data.session, keep))


REFINE_MIN_TICKS = 500  # the timing search replays at least this much of each session it replays (100 s at 5 Hz)


def _replay_slices(data: RankingData, fold_masks, max_groups: int, min_ticks: int = REFINE_MIN_TICKS) -> np.ndarray:
    """What the timing search replays, about `max_groups` ticks in all (fewer only when the sessions have fewer): the
    held-out sessions of every fold, taken from the folds in turn, each from its start, each as long as the others
    (or whole, when shorter), as many sessions as leave each at least `min_ticks` (all of them when they fit); a
    budget under `min_ticks` replays the start of one session. A group mask over `data`, whose rows are grouped by
    session (as RankingData keeps them)."""
    queues = [sorted(set(data.session[held].tolist())) for _, held in fold_masks]
    in_turn = [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]
    if not in_turn:
        return np.zeros(data.n_groups, bool)
    budget = max(1, int(max_groups))
    per = dict(zip(*np.unique(data.session, return_counts=True)))

    def stretch(sessions: list) -> int:  # the common length: each session replays min(its length, this)
        left, lengths = budget, sorted(int(per[x]) for x in sessions)
        for i, n in enumerate(lengths):
            if n * (len(lengths) - i) > left:
                return max(1, left // (len(lengths) - i))
            left -= n
        return lengths[-1]

    n = max(1, min(len(in_turn), budget // max(1, int(min_ticks))))
    while n < len(in_turn) and sum(min(int(per[x]), stretch(in_turn[:n])) for x in in_turn[:n]) < budget:
        n += 1  # short sessions leave budget over: more sessions take it
    k = stretch(in_turn[:n])
    first = np.r_[True, data.session[1:] != data.session[:-1]]
    position = np.arange(data.n_groups) - np.maximum.accumulate(np.where(first, np.arange(data.n_groups), 0))
    return np.isin(data.session, in_turn[:n]) & (position < k)


def _whole(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def check_study_args(*, n_trials=0, folds=3, max_groups=50_000, space=None, features=None, timing_trials=None,
                     timing_replay_groups=None) -> None:
    """What `tune` is given, checked before any data is read: ValueError naming the first bad argument. The
    retrain job runs it on the study's run config in its first step (pipelines/assets.py StudyConfig), so a typo
    fails in seconds, not after the dataset and the real-media set were built."""
    if not _whole(n_trials) or n_trials < 0:
        raise ValueError(f"n_trials is how many Optuna trials to run, a whole number >= 0, not {n_trials!r}")
    if not _whole(folds) or folds < 2:
        raise ValueError(f"folds is how many session folds a trial validates on, a whole number >= 2, not {folds!r}")
    if not _whole(max_groups) or max_groups < 1:
        raise ValueError(f"max_groups is the most ticks a tuning fit draws on, a whole number >= 1, not {max_groups!r}")
    if timing_trials is not None and (not _whole(timing_trials) or timing_trials < 0):
        raise ValueError(f"timing_trials is how many replays search the best ranker's timing, a whole number >= 0 "
                         f"(None: REFINE_SEARCH_TRIALS), not {timing_trials!r}")
    if timing_replay_groups is not None and (not _whole(timing_replay_groups) or timing_replay_groups < 1):
        raise ValueError(f"timing_replay_groups is the most ticks the timing search replays, a whole number >= 1, not "
                         f"{timing_replay_groups!r}")
    if space is not None and not isinstance(space, dict):
        raise ValueError(f"search space: give a mapping of parameter -> range, not {type(space).__name__}")
    search_space(space)
    _feature_index(features)


def tune(data: RankingData, *, n_trials: int, storage: str, study_name: str, folds: int = 3, seed: int = 0,
         mlflow_tracking_uri: str | None = None, experiment: str = "aiobs-ranker-tuning", max_groups: int = 50_000,
         timeout_s: float | None = None, mlflow_artifacts_dir: str | None = None, policy=None, tick_s: float = 0.2,
         tune_policy: bool = True, replay_groups: int = 15_000, space: dict | None = None,
         features: list[str] | None = None, progress=None, real=None, timing_trials: int | None = None,
         timing_replay_groups: int | None = None):
    """Run (or resume) an Optuna study; returns it. The objective is the mean of cut-point top-1 over session folds
    and, with `tune_policy`, the replay frame agreement of the first fold's held-out sessions (at most about
    `replay_groups` ticks of them) replayed through the director core under `policy` (what production runs) with the
    trial's timing (`POLICY_SPACE`). Without `tune_policy` it is cut-point top-1 alone. With `tune_policy` the best
    trial's ranker then gets its own timing (`_refine_timing`: its best candidates and `timing_trials` more replays,
    default REFINE_SEARCH_TRIALS, searching the timing alone, on about `timing_replay_groups` ticks of every fold's
    held-out sessions scored out of fold; default `replay_groups`, what a trial replays).

    With more than `max_groups` groups (ticks) the fits thin the steady ticks (`train_ranker`'s `steady_stride`: every
    human cut point, every k-th tick between them, weighted k: the cut points plus about `max_groups` steady ticks,
    of which each fold's fit sees its training share); every session is kept, and
    the cut-point top-1 and the replays use every held-out tick. The study's user attrs record what it saw
    (`tune_groups` the fits drew from, `available_groups`, `steady_stride`, `tune_sessions`, `available_sessions`).
    Trials are logged to MLflow
    when `mlflow_tracking_uri` is given, in experiment `experiment`, created with its artifacts under
    `mlflow_artifacts_dir` (default: `artifacts/` next to a sqlite store).

    `space` overrides entries of SEARCH_SPACE; `features` tunes models on a subset of RANKER_FEATURES (None = all).
    A study resumes only under the search space, feature subset and policy tuning it was started with (recorded in
    its user attrs): when any of them changed, a NEW study `<study_name>-<hash>` is started with a warning, the old
    one stays in storage (`study.user_attrs["resumed"]` says which happened). `progress(line)` receives one line per
    finished trial (n/total, state, objective and its two parts, best so far); the same lines are logged at INFO.

    `real` (the real-media evaluation set, runtime/realset.py) holds every trial to the gate's real-media rule: the
    trial's model under its policy timing must follow the speaker there as well as the rule baseline does
    (`Gate.check_real`); a trial that does not is scored `objective - 1` (its problems in the `real_problems` user
    attribute), so the study never picks a ranker or a timing that the gate would refuse on real footage. With
    `tune_policy`, a new study's first trial tries `policy`'s own timing (`incumbent_timing`): the timing production
    runs now is always among the candidates."""
    import optuna
    from .evaluate import cut_point_top1
    from .policy import PolicyConfig

    check_study_args(n_trials=n_trials, folds=folds, max_groups=max_groups, space=space, features=features,
                     timing_trials=timing_trials, timing_replay_groups=timing_replay_groups)
    base_policy = policy or PolicyConfig()
    space = search_space(space)
    idx = _feature_index(features)
    # the MLflow store first: an unreachable tracking server is an error now, not after the first trial
    mlflow_logger = (_mlflow_trial_logger(mlflow_tracking_uri, experiment, mlflow_artifacts_dir)
                     if mlflow_tracking_uri else None)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    available_groups, available_sessions = int(data.n_groups), len(data.sessions())
    # more than `max_groups` ticks: the fits keep every cut point and every k-th steady tick between them (weighted
    # k), so every session still counts (the replays and the cut-point top-1 use all held-out ticks). Issue 10: on
    # 600k rows this tuned as well as a session subsample of the same size, 25% faster (more trials pruned early)
    stride = max(1, -(-int(data.n_groups) // int(max_groups)))
    fit_groups = int(data.thinned(stride).sum())
    if timing_replay_groups is None:
        timing_replay_groups = replay_groups
    if len(data.sessions()) < 2 or not data.n_groups:
        raise ValueError(f"tuning needs labelled ticks of at least 2 sessions (models are validated on sessions they "
                         f"did not see); got {data.n_groups} ticks of {len(data.sessions())} session(s)")
    fold_masks = session_folds(data, folds)
    splits = [(data.select_groups(tr), data.select_groups(va)) for tr, va in fold_masks]
    fold_cuts = [va.select_groups(va.cut_points) for _, va in splits]  # what the cut-point top-1 scores

    judge = _TimingJudge(_replay_sessions(splits[0][1], replay_groups) if tune_policy else None, base_policy, tick_s,
                         idx, real)

    def objective(trial) -> float:
        params, rounds = suggest(trial, space)
        timing = suggest_policy(trial) if tune_policy else None
        scores, agreement, first = [], None, None
        for i, (tr, va) in enumerate(splits):
            cb = [_pruning_callback(trial, "validation-ndcg@1")] if i == 0 else None
            booster = train_ranker(tr, params, rounds, valid=va, callbacks=cb, features=features,
                                   steady_stride=stride)
            if i == 0:
                first = booster
            cuts = fold_cuts[i]
            scores.append(cut_point_top1(booster.inplace_predict(cuts.X[:, idx]), cuts))
            so_far = [x for x in scores if np.isfinite(x)]
            if so_far:
                trial.report(float(np.mean(so_far)), step=rounds + i)
            if i < len(splits) - 1 and trial.should_prune():
                raise optuna.TrialPruned()
        if judge.replays:  # the first fold's model replayed; only for trials that were not pruned (the costly part)
            agreement = judge.agreement(first, timing)
        finite = [x for x in scores if np.isfinite(x)]  # a fold whose held-out sessions have no cut point has no top-1
        top1 = float(np.mean(finite)) if finite else float("nan")
        trial.set_user_attr("cut_top1", top1)
        parts = [x for x in (top1, agreement) if x is not None and np.isfinite(x)]
        if agreement is not None and np.isfinite(agreement):
            trial.set_user_attr("replay_agreement", float(agreement))
        if not parts:
            raise ValueError("tuning has nothing to score: no held-out fold has a human cut point and no replay ran "
                             f"({data.n_groups} ticks of {len(data.sessions())} sessions); log more directed sessions")
        value = float(np.mean(parts))
        if real:  # the gate's real-media rule, for the last fold's model under this trial's timing
            follow, problems = judge.real_rule(booster, timing)
            trial.set_user_attr("real_speaker_follow", follow)
            if problems:
                trial.set_user_attr("real_problems", "; ".join(problems)[:500])
                value -= 1.0
        return value

    setup = {"search_space": space, "features": list(features) if features else list(RANKER_FEATURES),
             "tune_policy": bool(tune_policy), "policy_space": POLICY_SPACE if tune_policy else {}}
    setup = json.loads(json.dumps(setup))  # as the storage gives it back (tuples -> lists)

    # trials send a heartbeat: a trial left RUNNING by a run that was stopped (Ctrl-C, a killed worker) is marked
    # failed by the next run once it has been silent for `grace_period`, instead of staying RUNNING in the study
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # (heartbeats: experimental in Optuna)
        rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=120) \
            if isinstance(storage, str) else storage

    def create(name):
        return optuna.create_study(study_name=name, storage=rdb, direction="maximize", load_if_exists=True,
                                   sampler=optuna.samplers.TPESampler(seed=seed),
                                   pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=20))

    study = create(study_name)
    # trials first, then the setup: a worker records the setup before its first trial, so a study that has trials
    # shows their setup (read the other way round, a second worker starting at the same moment saw trials without a
    # setup and left for a study of its own)
    resumed = bool(study.trials)
    before = {k: study.user_attrs.get(k) for k in setup}
    if resumed and before != setup:
        changed = sorted(k for k in setup if before[k] != setup[k])
        digest = hashlib.sha1(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:8]
        new_name = f"{study_name}-{digest}"
        log.warning("study %s was run with another %s: its trials do not describe this search; tuning in study %s "
                    "(the old study stays in storage)", study_name, " and ".join(changed), new_name)
        if progress:
            progress(f"study {study_name}: {', '.join(changed)} changed since its last run -> study {new_name}")
        study_name, study = new_name, create(new_name)
        resumed = bool(study.trials)
    for k, v in setup.items():
        study.set_user_attr(k, v)
    study.set_user_attr("resumed", resumed)
    incumbent = incumbent_timing(base_policy)
    if tune_policy and not _tried(study, incumbent):  # the timing production runs now is tried first (again, when the
        study.enqueue_trial(incumbent)  # trial that had it failed), so a learned timing is adopted only when better
    done = len([t for t in study.trials if t.state.is_finished()])
    # a resumed study draws on from where it stopped: the same seed again would redraw its first run's random trials
    study.sampler = optuna.samplers.TPESampler(seed=seed + done)
    if progress:
        progress(f"study {study_name}: {'resuming after ' + str(done) + ' trials' if resumed else 'new'}; "
                 f"{n_trials} trial(s) on {data.n_groups:,} ticks of {len(data.sessions())} sessions"
                 + (f" (the fits draw on every cut point and one steady tick in {stride}: {fit_groups:,} ticks)"
                    if stride > 1 else ""))
    callbacks = [_progress_logger(n_trials, done, progress)]
    if mlflow_logger is not None:
        callbacks.append(mlflow_logger)
    seen = {"tune_groups": fit_groups, "available_groups": available_groups, "steady_stride": stride,
            "tune_sessions": len(data.sessions()), "available_sessions": available_sessions}
    for k, v in seen.items():  # what this call tuned on (a resumed study records its latest call)
        study.set_user_attr(k, v)
    if n_trials > 0:
        study.optimize(objective, n_trials=n_trials, callbacks=callbacks, timeout=timeout_s, gc_after_trial=True)
        if judge.replays and _has_value(study):
            _refine_timing(study, data, fold_masks, judge, features, progress,
                           REFINE_SEARCH_TRIALS if timing_trials is None else timing_trials, stride,
                           timing_replay_groups)
    log.info("study %s: %d trials before, %d now; best %.4f", study_name, done, len(study.trials),
             max((t.value for t in study.trials if t.value is not None), default=float("nan")))
    return study


PRUNE_EVERY = 10  # boosting rounds between two reports to the study (and asks whether to prune)


def _pruning_callback(trial, key: str, every: int = PRUNE_EVERY):
    """optuna-integration's XGBoost pruning callback, asked every `every` boosting rounds instead of every round:
    each ask writes the intermediate value to the study's RDB storage and reads its trials back, which cost a tenth
    of a tuning run (issue 10's speed). Every trial reports at the same rounds, so the median pruner compares like
    with like."""
    from optuna_integration import XGBoostPruningCallback

    class Sparse(XGBoostPruningCallback):
        def after_iteration(self, model, epoch: int, evals_log: dict) -> bool:
            return False if epoch % every else super().after_iteration(model, epoch, evals_log)

    return Sparse(trial, key)


def _feature_index(features: list[str] | None) -> slice | np.ndarray:
    """Columns of RANKER_FEATURES rows that a model on `features` reads (all when None); ValueError names unknowns."""
    if not features:
        return slice(None)
    unknown = [f for f in features if f not in RANKER_FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; the contract's ranker features are {list(RANKER_FEATURES)}")
    twice = sorted({f for f in features if list(features).count(f) > 1})
    if twice:
        raise ValueError(f"feature(s) {twice} given more than once")
    return np.array([RANKER_FEATURES.index(f) for f in features], dtype=np.intp)


def _progress_logger(total: int, before: int, progress=None):
    """An Optuna callback: one line per finished trial (n/total, state, objective and its parts, best so far)."""

    def report(study, trial) -> None:
        n = len([t for t in study.trials if t.state.is_finished()]) - before
        parts = ", ".join(f"{k} {trial.user_attrs[k]:.4f}" for k in ("cut_top1", "replay_agreement",
                                                                       "real_speaker_follow") if k in trial.user_attrs)
        if "real_problems" in trial.user_attrs:
            parts += "; refused on real media"
        value = f"objective {trial.value:.4f}" if trial.value is not None else ""
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:  # no complete trial yet
            best = "no complete trial yet"
        line = (f"trial {n}/{total} #{trial.number} {trial.state.name.lower()}"
                + (f": {value}" if value else "") + (f" ({parts})" if parts else "") + f"; {best}")
        log.info(line)
        if progress:
            progress(line)

    return report


def _mlflow_trial_logger(tracking_uri: str, experiment: str, artifacts_dir: str | None = None):
    """An Optuna callback that logs every finished trial (params, CV score, state) as an MLflow run, timed from the
    trial's start to its completion, through an explicit MlflowClient (MLflow's global state is not touched). The
    experiment is created with an explicit artifact location (see ranker.registry.artifact_location). Made before
    the study starts: an unreachable tracking server is a RankerError then (registry.client_for)."""
    from mlflow.entities import Metric, RunStatus

    from .registry import client_for, ensure_experiment, log_batch, start_run

    client = client_for(tracking_uri)
    experiment_id: list[str] = []  # created on the first finished trial, not when tuning starts
    status = {"COMPLETE": RunStatus.FINISHED, "PRUNED": RunStatus.KILLED, "FAIL": RunStatus.FAILED}

    def log_trial(study, trial) -> None:
        if not experiment_id:
            experiment_id.append(ensure_experiment(client, experiment, tracking_uri, artifacts_dir))
        start, end = _millis(trial.datetime_start), _millis(trial.datetime_complete)
        run = start_run(client, experiment_id[0], f"{study.study_name}-trial-{trial.number}", start,
                        tags={"optuna.study": study.study_name, "optuna.trial": str(trial.number),
                              "optuna.state": trial.state.name})
        try:
            values = {"objective": trial.value, "cv_cut_top1": trial.user_attrs.get("cut_top1"),
                      "replay_agreement": trial.user_attrs.get("replay_agreement")}
            metrics = [Metric(k, float(v), end or start, 0) for k, v in values.items() if v is not None]
            log_batch(client, run.info.run_id, params=trial.params, metrics=metrics)
        finally:
            state = status.get(trial.state.name, RunStatus.FINISHED)
            client.set_terminated(run.info.run_id, RunStatus.to_string(state), end_time=end)

    return log_trial


def _millis(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt is not None else None


def _tried(study, params: dict) -> bool:
    """Some trial of `study` that did not fail ran (or is queued to run) `params`' policy timing."""
    from optuna.trial import TrialState

    want = timing_of(params)
    return any(timing_of(t.system_attrs.get("fixed_params", t.params)) == want
               for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL)


def _has_value(study) -> bool:
    return any(t.value is not None and np.isfinite(t.value) for t in study.trials)


REFINE_CANDIDATES = 8  # timings of the best trials tried for the chosen ranker (plus production's own)
# then a search over the timing alone, for that ranker: a replay costs seconds where a trial costs a minute, and the
# joint study's 12-30 trials draw too few timings in POLICY_SPACE's 7 dimensions (issue 10: own-director models ended
# 5-10 points of replay agreement below what their ranker reached under a timing searched for it)
REFINE_SEARCH_TRIALS = 30


def search_timing(agreement, candidates=(), search_trials: int = REFINE_SEARCH_TRIALS,
                  seed: int = 0) -> list[tuple[float, dict]]:
    """The policy timing (POLICY_SPACE) under which `agreement(timing) -> float` is highest, written once for the
    pipeline's refinement (`_refine_timing`) and the bench's references (bench/training.py, the oracles): the
    `candidates` first, then a TPE search (`search_trials` more), then the search's best with the on/off rules
    (`hold_speaker`, `follow_every_turn`) set every other way. TPE settles on one side of a rule after a few draws
    and tunes the numbers for it: a scene oracle's search on 17 patient sessions ended at 0.887 with `hold_speaker`
    on, where its best timing with the rule off agreed 0.944. Returns every timing tried once, (agreement, timing),
    best first; a non-finite agreement counts as -1."""
    import itertools

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def judged(timing: dict) -> float:
        a = float(agreement(timing))
        return a if np.isfinite(a) else -1.0

    search = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    for timing in candidates:  # the candidates first: the search starts from what is known
        search.enqueue_trial({POLICY_PREFIX + k: v for k, v in timing.items()})
    search.optimize(lambda trial: judged(suggest_policy(trial)), n_trials=len(candidates) + max(0, search_trials))
    results, seen = [], []
    for t in search.trials:
        timing = timing_of(t.params)
        if t.value is not None and timing not in seen:
            seen.append(timing)
            results.append((float(t.value), timing))
    if results:
        best = max(results, key=lambda r: r[0])[1]
        rules = [k for k, space in POLICY_SPACE.items() if isinstance(space[0], bool) and k in best]
        for sides in itertools.product((True, False), repeat=len(rules)):
            timing = {**best, **dict(zip(rules, sides))}
            if timing not in seen:
                seen.append(timing)
                results.append((judged(timing), timing))
    results.sort(key=lambda r: -r[0])
    return results


def _refine_timing(study, data: RankingData, fold_masks, judge: _TimingJudge, features, progress=None,
                   search_trials: int = 0, steady_stride: int = 1, replay_groups: int = 15_000) -> None:
    """The timing for the best trial's ranker, chosen for THAT ranker and on every session tuning has: the joint
    objective picks the ranker's parameters well (cut-point top-1 varies most between trials) but the winning trial's
    timing is only as good as one draw next to them, judged on one fold's sessions. So the best trial's parameters
    are fitted once per fold, and the folds' held-out sessions (`_replay_slices`: about `replay_groups` ticks in all,
    the opening stretch of as many sessions as give each `REFINE_MIN_TICKS`) are replayed with the scores of the
    model that did not train on them (out of fold): under the timings of the
    `REFINE_CANDIDATES` best trials that passed the real-media rule and under production's own (`incumbent_timing`);
    then `search_timing` searches POLICY_SPACE alone (`search_trials` more replays, seeded with those candidates, and
    the best with the on/off rules set every other way) for a better one. The timing with the highest replay
    agreement that keeps the real-media rule (for the last of those fold models) is kept in the study's user attributes
    (`refined_timing`, None when none keeps it; every candidate's agreement in `refined_candidates`, best first;
    `refined_sessions`, how many sessions the replays covered); `best_policy` returns it.

    More sessions choose a timing that holds on sessions tuning never saw (issue 10, the same ranker judged on
    held-out sessions; a timing searched on those held-out sessions themselves is a bound no pipeline has):
    - reactions, 28 training sessions, 12 held out: chosen on one fold's 10 whole sessions (before) 0.777; on all 28
      whole sessions (45,000 ticks) 0.787; on the first 535 ticks of all 28 (15,000 ticks, this) 0.789; bound 0.788;
    - patient, 30 / 10: one fold's 0.874, all 30 whole 0.883 (bound 0.886);
    - patient, another sample, 34 / 6: 0.851, 0.851, and the first 441 ticks of all 34 0.849 (bound 0.853).
    On 585,000 mixed rows (bench/training.py, BENCH_VIEWS=0, 22 held-out sessions, idle 2-core box): one fold's
    sessions, tuning 168 s, held-out agreement 0.807; all whole sessions (45,000 ticks) 330 s, 0.814; the opening
    stretches (15,000 ticks, this) 165 s, 0.814."""
    params, rounds = best_params(study)
    replay_mask = np.zeros(data.n_groups, bool)
    scores = np.full(len(data.y), np.nan)
    booster = None
    picked = _replay_slices(data, fold_masks, replay_groups)
    for train_mask, held_mask in fold_masks:
        keep = held_mask & picked
        if not keep.any():  # (a budget smaller than a session per fold: the first folds' sessions only)
            continue
        booster = train_ranker(data.select_groups(train_mask), params, rounds, features=features,
                               steady_stride=steady_stride)
        rows = np.repeat(keep, data.group_sizes)
        scores[rows] = booster.inplace_predict(data.X[rows][:, judge.idx])
        replay_mask |= keep
    judge = judge.on(data.select_groups(replay_mask))
    scores = scores[np.repeat(replay_mask, data.group_sizes)]
    n_sessions = len(judge.replayed.sessions())
    ranked = sorted((t for t in study.trials if t.value is not None and "real_problems" not in t.user_attrs
                     and timing_of(t.params)), key=lambda t: -t.value)
    candidates = [timing_of(incumbent_timing(judge.base_policy))]
    for t in ranked[:REFINE_CANDIDATES]:
        if timing_of(t.params) not in candidates:
            candidates.append(timing_of(t.params))
    results = search_timing(lambda timing: judge.agreement(booster, timing, scores), candidates, search_trials)
    chosen, refused = None, []
    for a, t in results:  # best agreement first; the first that keeps the real-media rule wins
        if not judge.real or not judge.real_rule(booster, t)[1]:
            chosen = (a, t)
            break
        refused.append(t)
    study.set_user_attr("refined_candidates", [{"agreement": round(a, 4), "timing": t} for a, t in results])
    study.set_user_attr("refined_timing", chosen[1] if chosen else None)
    study.set_user_attr("refined_agreement", chosen[0] if chosen else None)
    study.set_user_attr("refined_sessions", n_sessions)
    if chosen is None:
        line = (f"study {study.study_name}: none of {len(results)} candidate timings keeps the real-media rule for the "
                "best trial's ranker; the model keeps the front door's timing")
    else:
        def agreement_of(timing: dict) -> float:
            return next((a for a, t in results if t == timing), float("nan"))

        production = f"{agreement_of(candidates[0]):.4f}"
        own = agreement_of(timing_of(study.best_trial.params))
        own = f"{own:.4f}" if np.isfinite(own) else "not replayed: refused on real media"
        if candidates[0] in refused:
            production += ", which fails the real-media rule"
        line = (f"study {study.study_name}: timing for the best trial's ranker, best of {len(results)} tried: replay "
                f"agreement {chosen[0]:.4f} on {n_sessions} session{'s' if n_sessions != 1 else ''}, out of fold "
                f"(its own trial's timing {own}, production's "
                f"{production})" + (f"; {len(refused)} better-agreeing timing(s) fail the real-media rule"
                                    if refused else ""))
    log.info(line)
    if progress:
        progress(line)


def keep_real_rule(booster, study, real, policy=None, tick_s: float = 0.2, progress=None) -> dict | None:
    """The learned timing the FINAL model ships with, re-stamped into `booster`: the best-agreeing tuned timing
    (`refined_candidates`, by replay agreement out of fold) under which THIS model keeps the gate's real-media rule;
    None (the front door's timing, no learned one stamped) when none does. The tuning checked the rule with a fold's
    model, and the final model, trained on every session, may follow the speaker less well under the same timing,
    or as well under a better-agreeing one that the fold's model failed (19th session: +4 points of agreement with a
    reactions director, 0.726 -> 0.767, from the timing the fold's model had refused). Without `real`, or a study
    that did not tune the timing, the timing is `best_policy`'s and nothing is checked."""
    from .policy import PolicyConfig
    from .xgb import ATTR_FEATURES, ATTR_POLICY, ATTR_SCHEMA, ATTR_VERSION

    chosen = best_policy(study)
    if not real or "refined_candidates" not in study.user_attrs:
        return chosen
    base = policy or PolicyConfig()
    judge = _TimingJudge(None, base, tick_s, None, real)
    candidates = [dict(c["timing"]) for c in study.user_attrs["refined_candidates"]]  # best agreement first
    if chosen is not None and chosen not in candidates:
        candidates.insert(0, chosen)
    booster.set_attr(**{ATTR_POLICY: None})  # the model's own stamp would override the timing under test
    keep, problems_of = None, {}
    for n, timing in enumerate(candidates, 1):
        problems = judge.real_rule(booster, timing)[1]
        if not problems:
            keep = timing
            break
        problems_of[n] = problems
    if keep != chosen:
        at = candidates.index(chosen) + 1 if chosen is not None else None
        if keep is not None and at is not None and n < at:
            line = (f"the final model keeps the real-media rule under a better-agreeing timing than the one the "
                    f"fold's model kept (candidate {n} of {len(candidates)}, not {at}): it ships with that")
        else:
            why = (f"the final model fails the real-media rule under the tuned timing ({'; '.join(problems_of[at])})"
                   if at is not None else "no tuned timing kept the real-media rule for the fold's model")
            if keep is not None:
                then = f"it ships with the best-agreeing timing that keeps it (candidate {n} of {len(candidates)})"
            else:
                front_door = judge.real_rule(booster, timing_of(incumbent_timing(base)))[1]
                then = "no tuned timing keeps it: it ships with the front door's" + (
                    f", which fails the rule too ({'; '.join(front_door)}): the gate will refuse it"
                    if front_door else "")
            line = f"{why}; {then}"
        line = f"study {study.study_name}: {line}"
        if progress:
            progress(line)
        else:
            log.warning(line)
    attrs = booster.attributes()
    stamp_booster(booster, json.loads(attrs[ATTR_FEATURES]), attrs.get(ATTR_VERSION, ""), int(attrs[ATTR_SCHEMA]),
                  policy=keep)
    return keep


def best_params(study) -> tuple[dict, int]:
    """The best trial's XGBoost parameters and rounds (its policy timing: `best_policy`)."""
    if not _has_value(study):
        raise ValueError(f"study {study.study_name} has no finished trial to take parameters from (a new study run "
                         f"with n_trials 0, or every trial failed or was pruned): run it with n_trials >= 1")
    p = {k: v for k, v in study.best_params.items() if not k.startswith(POLICY_PREFIX)}
    rounds = int(p.pop("rounds", DEFAULT_ROUNDS))
    return p, rounds


def best_policy(study) -> dict[str, float] | None:
    """The policy timing learned with the best trial's ranker (ranker.policy.TUNED_FIELDS -> value): the refined one
    (`_refine_timing`) when tuning refined it, else the best trial's own; None when it was not tuned, or when
    even the best trial failed the real-media rule (then the front door's timing stays: no learned timing is better
    than one that loses the speaker on real footage)."""
    if "refined_timing" in study.user_attrs:  # chosen for the best trial's ranker (tune's last step)
        if study.user_attrs["refined_timing"] is None:
            log.warning("study %s: no candidate timing kept the real-media rule for the best trial's ranker; the "
                        "model keeps the front door's policy timing", study.study_name)
            return None
        return dict(study.user_attrs["refined_timing"])
    if "real_problems" in study.best_trial.user_attrs:
        log.warning("study %s: no trial passed the real-media rule (best: %s); the model keeps the front door's "
                    "policy timing", study.study_name, study.best_trial.user_attrs["real_problems"])
        return None
    return timing_of(study.best_params) or None


def train_ranker_dask(client, train: RankingData, params: dict | None = None, rounds: int = DEFAULT_ROUNDS,
                      model_version: str = "", chunk_groups: int = 20_000, policy: dict | None = None) -> xgb.Booster:
    """Train on a Dask cluster with xgboost.dask (ranking with qid; partitions never split a group).

    Cut-point up-weighting is not applied here (xgboost.dask takes per-row weights, ranking wants per-group ones).
    """
    import dask.array as da
    from xgboost import dask as dxgb

    p = {**BASE_PARAMS, **DEFAULT_PARAMS, **(params or {})}
    p.pop("cut_weight", None)
    train = train.led(float(p.pop("label_lead_s", 0.0)))
    qid = np.repeat(np.arange(train.n_groups), train.group_sizes)
    off = train.offsets
    bounds = list(range(0, train.n_groups, chunk_groups)) + [train.n_groups]
    row_chunks = tuple(int(off[b] - off[a]) for a, b in zip(bounds, bounds[1:]))
    X = da.from_array(train.X, chunks=(row_chunks, train.X.shape[1]))
    y = da.from_array(train.y.astype(np.float32), chunks=(row_chunks,))
    q = da.from_array(qid, chunks=(row_chunks,))
    dtrain = dxgb.DaskDMatrix(client, X, y, qid=q, feature_names=list(RANKER_FEATURES))
    out = dxgb.train(client, p, dtrain, num_boost_round=rounds)
    return stamp_booster(out["booster"], list(RANKER_FEATURES), model_version, policy=policy)
