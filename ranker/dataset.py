"""Training data for the learned ranker: one group per tick (all cameras), the human's choice as the relevant item.

Labels come from humans, the `overrides` events of a session, and only where the human's choice is known. Each tick
takes the session's latest human action at or before it (an ASOF join in ClickHouse on `ts`, `release` included):

- `take` (camera c): c is the label from the take on, until the next human action, while c is still on program
  (the tick's logged `decisions.program_camera`; the auto director cutting away ends it: whether the human agreed
  with that cut is unknown), and not after the session's supervision ended: the later of its last `supervised`
  decision and its last human action (after that nobody was known to be watching). The runtime marks a decision
  `supervised` when a human action arrived on that tick, so in live sessions the last take labels only until that
  tick; the simulator marks a watched session supervised throughout.
- `lock` (camera c, `timeout_s`): c is the label from the lock until the next human action, while c is on program,
  and only until the lock's timeout, `timeout_s`, or when NULL the session's logged policy `lock_timeout_s`, or
  `PolicyConfig().lock_timeout_s`; after it, unlabelled (the auto director resumed).
- `release`: unlabelled until the next human action.
- before a session's first human action: unlabelled.

Where a tick has no logged decision, the program check is skipped (the override's own scope decides). Unlabelled
ticks are dropped; `prev_human` is the previous labelled tick's label within the session. Several human actions
with the same `ts` are ambiguous (the ASOF join picks one).

Training may lead these labels (`RankingData.led`: the human's choice a tuned fraction of a second later, where the
reason for a cut already shows); evaluation always scores against the labels as they happened.

Only scene and temporal-context features are inputs (`RANKER_FEATURES`; program-state columns would teach a model to
"stay where you are"). `stage_off` says, per row, which analysis stages the row's `degraded` map names (`STAGES`): a
NULL feature whose stage is named there was expected (`FEATURE_STAGES`), anywhere else it is a data problem (the
dataset checks). The temporal features are NULL on rows logged before schema v4 (stage `temporal`). Groups are split by
session, so no session leaks between train and evaluation. Rows stream from ClickHouse as Arrow batches.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from features.extract import RANKER_FEATURES, SCENE_FEATURES, TEMPORAL_FEATURES
from features.schema import CAMERA_TICKS

# the director core's speech-timing inputs (replay rebuilds its contexts from them)
CONTEXT_COLUMNS = ("speaking", "speech_mask", "safe_cut_wait_s", "quiet_at", "stale", "asr_word_spans")

# NULL-able scene feature -> the analysis stage (its key in camera_ticks.degraded) that produces it: a row whose
# `degraded` map names the stage (off, not configured, no read yet, failed) is expected to have the feature NULL
TEMPORAL_SINCE = min(CAMERA_TICKS[f].since for f in TEMPORAL_FEATURES)  # rows logged before have none


def _temporal_stage(feature: str) -> str:
    """The temporal features came in schema versions (v4, then v7): rows logged before a feature's version have it
    NULL, as expected as a stage that was off. `temporal` = the v4 ones, `temporal_v<N>` = those added in vN."""
    since = CAMERA_TICKS[feature].since
    return "temporal" if since <= TEMPORAL_SINCE else f"temporal_v{since}"


FEATURE_STAGES: dict[str, str] = {"vlm_interest": "vlm", "vlm_age_s": "vlm",
                                  **{f: _temporal_stage(f) for f in TEMPORAL_FEATURES}}
STAGES: tuple[str, ...] = tuple(sorted(set(FEATURE_STAGES.values())))
# the schema version each temporal stage came in (all its features share it): rows logged before it have them NULL
STAGE_SINCE: dict[str, int] = {FEATURE_STAGES[f]: CAMERA_TICKS[f].since for f in TEMPORAL_FEATURES}


@dataclass
class RankingData:
    """Rows sorted by (session, tick, camera); one group per (session, tick)."""

    X: np.ndarray  # (rows, len(RANKER_FEATURES)) float32, NaN = missing
    y: np.ndarray  # (rows,) 1 where the camera is the human's choice
    camera: np.ndarray  # (rows,) camera id
    speaking: np.ndarray  # (rows,) bool, for replay contexts
    speech_mask: np.ndarray  # (rows,) uint8 voice activity across the tick
    safe_cut_wait_s: np.ndarray
    quiet_at: np.ndarray  # (rows,) float64 session time, NaN = no pause
    stale: np.ndarray
    word_spans: np.ndarray  # (rows,) object: each a flat [start0, end0, ...] of the ASR words since the last tick
    group_sizes: np.ndarray  # (groups,)
    session: np.ndarray  # (groups,)
    tick: np.ndarray  # (groups,)
    ts: np.ndarray  # (groups,) wall-clock seconds
    t: np.ndarray  # (groups,) session clock seconds (what the director core decided on)
    human: np.ndarray  # (groups,) camera the human has on program
    prev_human: np.ndarray  # (groups,) camera on program just before (== human except at cut points)
    schema_versions: set
    stage_off: np.ndarray  # (rows, len(STAGES)) bool: the row's `degraded` map names the stage

    def expected_null(self, feature: str) -> np.ndarray:
        """(rows,) bool: rows where `feature` may be NULL because the row says its stage was off/degraded."""
        stage = FEATURE_STAGES.get(feature)
        if stage is None:
            return np.zeros(len(self.y), bool)
        return self.stage_off[:, STAGES.index(stage)]

    @property
    def n_groups(self) -> int:
        return len(self.group_sizes)

    @property
    def offsets(self) -> np.ndarray:
        return np.r_[0, np.cumsum(self.group_sizes)]

    @property
    def cut_points(self) -> np.ndarray:
        """Groups where the human cut to another camera."""
        return self.human != self.prev_human

    def thinned(self, stride: int) -> np.ndarray:
        """Groups a fit keeps when it thins the steady ticks (ranker/train.py `steady_stride`): every human cut
        point, and every `stride`-th group between them."""
        return self.cut_points | (np.arange(self.n_groups) % max(1, int(stride)) == 0)

    def select_groups(self, mask: np.ndarray) -> "RankingData":
        groups = np.flatnonzero(mask)
        sizes = self.group_sizes[groups]
        ends = np.cumsum(sizes)  # each kept group's rows, at once: its first row, then counting up
        rows = np.repeat(self.offsets[groups] - (ends - sizes), sizes) + np.arange(int(ends[-1]) if len(ends) else 0)
        return RankingData(self.X[rows], self.y[rows], self.camera[rows], self.speaking[rows],
                           self.speech_mask[rows], self.safe_cut_wait_s[rows], self.quiet_at[rows], self.stale[rows],
                           self.word_spans[rows], self.group_sizes[mask],
                           self.session[mask], self.tick[mask], self.ts[mask], self.t[mask], self.human[mask],
                           self.prev_human[mask], self.schema_versions, self.stage_off[rows])

    def sessions(self) -> list[str]:
        return sorted(set(self.session.tolist()))

    def led(self, lead_s: float) -> "RankingData":
        """The same ticks labelled with the human's choice `lead_s` seconds LATER (within the session, where that
        tick is labelled): a training target, never an evaluation one. A human cuts a reaction time after what made
        them cut; labels taken as they happened mark the ticks in between, which already show the reason, with the
        old camera, and teach the ranker to contradict its own features. Led labels put the choice where its reason
        is; the policy's tuned timing (dwell, minimum hold) puts the human's pace back. `lead_s` is tuned with the
        ranker (ranker/train.py's `label_lead_s`). Ticks whose later tick is missing or too far (a gap in the
        labels) keep their own label."""
        from dataclasses import replace

        if lead_s <= 0 or not self.n_groups:
            return self
        sess = np.unique(self.session, return_inverse=True)[1].astype(np.float64)
        key = sess * 1e7 + self.t  # rows are sorted by (session, tick): the key is increasing
        j = np.minimum(np.searchsorted(key, key + lead_s - 1e-6), self.n_groups - 1)
        ok = (sess[j] == sess) & (self.t[j] - self.t <= lead_s + 0.5)
        human = np.where(ok, self.human[j], self.human)
        first = np.r_[True, self.session[1:] != self.session[:-1]]
        prev = np.where(first, human, np.r_[human[:1], human[:-1]])
        y = (self.camera == np.repeat(human, self.group_sizes)).astype(np.int8)
        return replace(self, y=y, human=human, prev_human=prev)


EVAL_PERCENT = 20  # the share of sessions held out for evaluation (by a hash of their id)


def is_eval_session(session_id: str, eval_percent: int = EVAL_PERCENT) -> bool:
    """Deterministic session split (stable across runs and machines)."""
    return zlib.crc32(session_id.encode()) % 100 < eval_percent


def _older(stage: str) -> str:
    """SQL: rows written before the stage existed (its features are NULL there by construction)."""
    return f" OR t.schema_version < {STAGE_SINCE[stage]}" if stage in STAGE_SINCE else ""


def scene_part(x: np.ndarray) -> np.ndarray:
    """The scene features of RANKER_FEATURES rows (what a `ranker.core.CameraTick` carries; the core recomputes the
    temporal context)."""
    return x[..., :len(SCENE_FEATURES)]


def _query(window_sql: str, side_sql: str = "") -> str:
    """The labelled-ticks query (the label rule is the module docstring's). `window_sql` filters camera_ticks (alias
    t); `side_sql` the same sessions in the overrides/decisions subqueries (no alias)."""
    from .policy import PolicyConfig

    feats = ", ".join(f"t.`{f}`" for f in RANKER_FEATURES)
    ctx = ", ".join(f"t.`{c}`" for c in CONTEXT_COLUMNS)
    stages = ", ".join(f"(mapContains(t.degraded, '{s}'){_older(s)}) AS `stage_off_{s}`" for s in STAGES)
    side_and = f"AND {side_sql}" if side_sql else ""
    side_where = f"WHERE {side_sql}" if side_sql else ""
    default_lock_ms = int(round(PolicyConfig().lock_timeout_s * 1000))
    return f"""
        SELECT t.session_id AS session_id, t.tick AS tick, toUnixTimestamp64Milli(t.ts) AS ts_ms,
               -- rows from before schema v2 have no session clock: the wall clock stands in for it
               if(t.schema_version >= 2, t.t, toUnixTimestamp64Milli(t.ts) / 1000.0) AS t_s,
               t.camera_id AS camera_id, t.schema_version AS schema_version, {feats}, {ctx}, {stages},
               if(o.camera_id != ''
                  AND (d.logged = 0 OR d.program = o.camera_id)
                  AND multiIf(
                      o.action = 'take', toUnixTimestamp64Milli(t.ts) <= s.supervised_until_ms,
                      o.action = 'lock', toUnixTimestamp64Milli(t.ts) < toUnixTimestamp64Milli(o.ts)
                          + toInt64(round(1000 * coalesce(o.timeout_s, s.lock_timeout_s, {default_lock_ms} / 1000))),
                      0),
                  o.camera_id, '') AS human_camera
        FROM camera_ticks AS t
        ASOF LEFT JOIN (
            SELECT session_id, ts, action, camera_id, timeout_s FROM overrides {side_where}
        ) AS o ON t.session_id = o.session_id AND t.ts >= o.ts
        LEFT JOIN (
            -- supervision ends at the later of the last supervised decision and the last human action
            SELECT session_id, max(ms) AS supervised_until_ms, max(lock_s) AS lock_timeout_s FROM (
                SELECT session_id, if(supervised, toUnixTimestamp64Milli(ts), 0) AS ms,
                       JSONExtract(policy_config, 'lock_timeout_s', 'Nullable(Float64)') AS lock_s
                FROM decisions WHERE (supervised OR policy_config != '') {side_and}
                UNION ALL
                SELECT session_id, toUnixTimestamp64Milli(ts) AS ms, CAST(NULL AS Nullable(Float64)) AS lock_s
                FROM overrides {side_where}
            ) GROUP BY session_id
        ) AS s ON t.session_id = s.session_id
        LEFT JOIN (
            SELECT session_id, tick, any(program_camera) AS program, toUInt8(1) AS logged
            FROM decisions {side_where} GROUP BY session_id, tick
        ) AS d ON t.session_id = d.session_id AND t.tick = d.tick
        {window_sql}
        ORDER BY session_id, tick, camera_id
    """


def load_ranking_data(store, sessions: list[str] | None = None, synthetic: bool | None = None) -> RankingData:
    """Stream labelled ticks from ClickHouse into a RankingData (ticks without a human label are skipped). A feature
    log written by older code is brought to this code's schema first (`ensure_schema`: additive, what every writer
    does), so a notebook reading an old data dir gets its rows with the newer columns NULL, not an unknown column; a
    current one is only read (read-only credentials work)."""
    from features.schema import SCHEMA_VERSION

    if store.schema_version() < SCHEMA_VERSION:
        store.ensure_schema()
    clauses, params, side = [], {}, ""
    if sessions is not None:
        clauses.append("t.session_id IN {sessions:Array(String)}")
        side = "session_id IN {sessions:Array(String)}"
        params["sessions"] = list(sessions)
    if synthetic is not None:
        clauses.append("t.synthetic = {synthetic:Bool}")
        params["synthetic"] = synthetic
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    parts: dict[str, list] = {k: [] for k in ("X", "session", "tick", "ts", "t", "camera", "human", "speaking",
                                              "mask", "safe", "quiet", "stale", "words", "off", "schema")}
    with store.client.query_arrow_stream(_query(where, side), parameters=params) as stream:
        for batch in stream:
            cols = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
            parts["X"].append(np.column_stack([cols[f].to_numpy(zero_copy_only=False).astype(np.float32)
                                               for f in RANKER_FEATURES]))
            parts["session"].append(cols["session_id"].to_numpy(zero_copy_only=False).astype(str))
            parts["tick"].append(cols["tick"].to_numpy(zero_copy_only=False))
            parts["ts"].append(cols["ts_ms"].to_numpy(zero_copy_only=False) / 1000.0)
            parts["t"].append(cols["t_s"].to_numpy(zero_copy_only=False).astype(np.float64))
            parts["quiet"].append(cols["quiet_at"].to_numpy(zero_copy_only=False).astype(np.float64))
            parts["camera"].append(cols["camera_id"].to_numpy(zero_copy_only=False).astype(str))
            parts["human"].append(cols["human_camera"].to_numpy(zero_copy_only=False).astype(str))
            parts["speaking"].append(cols["speaking"].to_numpy(zero_copy_only=False).astype(bool))
            parts["mask"].append(cols["speech_mask"].to_numpy(zero_copy_only=False).astype(np.uint8))
            parts["safe"].append(cols["safe_cut_wait_s"].to_numpy(zero_copy_only=False).astype(np.float32))
            parts["stale"].append(cols["stale"].to_numpy(zero_copy_only=False).astype(bool))
            words = np.empty(len(batch), dtype=object)
            words[:] = cols["asr_word_spans"].to_pylist()
            parts["words"].append(words)
            parts["off"].append(np.column_stack([cols[f"stage_off_{st}"].to_numpy(zero_copy_only=False).astype(bool)
                                                 for st in STAGES]).reshape(len(batch), len(STAGES)))
            parts["schema"].append(np.unique(cols["schema_version"].to_numpy(zero_copy_only=False)))
    if not parts["X"]:
        return _empty()
    schema_versions = {int(v) for arr in parts.pop("schema") for v in arr}
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    labelled = cat["human"] != ""
    for k in ("X", "session", "tick", "ts", "t", "camera", "human", "speaking", "mask", "safe", "quiet",
              "stale", "words", "off"):
        cat[k] = cat[k][labelled]
    n = len(cat["tick"])
    if n == 0:
        return _empty()
    new_group = np.r_[True, (cat["session"][1:] != cat["session"][:-1]) | (cat["tick"][1:] != cat["tick"][:-1])]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.r_[starts, n])
    human = cat["human"][starts]
    session = cat["session"][starts]
    prev = np.r_[human[:1], human[:-1]]
    first_of_session = np.r_[True, session[1:] != session[:-1]]
    prev = np.where(first_of_session, human, prev)
    return RankingData(
        X=cat["X"], y=(cat["camera"] == np.repeat(human, sizes)).astype(np.int8), camera=cat["camera"],
        speaking=cat["speaking"], speech_mask=cat["mask"], safe_cut_wait_s=cat["safe"], quiet_at=cat["quiet"],
        stale=cat["stale"], word_spans=cat["words"],
        group_sizes=sizes, session=session, tick=cat["tick"][starts], ts=cat["ts"][starts], t=cat["t"][starts],
        human=human, prev_human=prev,
        schema_versions=schema_versions, stage_off=cat["off"],
    )


def _empty() -> RankingData:
    z = np.zeros(0)
    return RankingData(np.zeros((0, len(RANKER_FEATURES)), np.float32), z.astype(np.int8), z.astype(str),
                       z.astype(bool), z.astype(np.uint8), z.astype(np.float32), z, z.astype(bool),
                       np.empty(0, object), z.astype(int), z.astype(str),
                       z.astype(int), z, z, z.astype(str), z.astype(str), set(), np.zeros((0, len(STAGES)), bool))


def split_by_session(data: RankingData, eval_percent: int = EVAL_PERCENT) -> tuple[RankingData, RankingData]:
    ev = np.array([is_eval_session(s, eval_percent) for s in data.session], bool)
    sessions = data.sessions()
    trained = len(set(data.session[~ev].tolist()))
    # tiny data: keep at least one session on each side, and two to train on when there are three or more (tuning
    # validates on sessions it did not train on; the hash alone left one of three sessions to train on ~10% of runs)
    if ev.all() or not ev.any() or (trained < 2 and len(sessions) >= 3):
        held = set(sessions[-max(1, len(sessions) * eval_percent // 100):])
        ev = np.isin(data.session, list(held))
    return data.select_groups(~ev), data.select_groups(ev)
