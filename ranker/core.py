"""The director core: one session's tick, written once.

Every front door (`aiobs direct`, `aiobs live`, the BentoML service) and every replay (offline evaluation, the
promotion gate, the replay-equals-production tests) calls `DirectorCore.tick`:

    scene features + speech timing per camera  ->  temporal context features (features/temporal.py)
      ->  score with the assigned ranker  ->  policy contexts  ->  step the switching policy  ->  explain the decision
      ->  feature-log rows (camera_ticks, decisions, overrides)

Nothing else builds policy contexts, decision rows or override rows. The core is deterministic given its inputs and
uses each input in exactly the precision the feature log keeps (scores and Float32 columns are rounded to float32
before the policy sees them, the session clock is a Float64 column), so replaying a session's logged rows
(`replay_logged`) reproduces its cut list exactly.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np
from prometheus_client import Counter, Gauge

from features.extract import RANKER_FEATURES, SCENE_BOUNDS, SCENE_FEATURES
from features.schema import CAMERA_TICKS
from features.temporal import TemporalState

from features.conversation import FLOOR_MIN_PERSON_AREA, Conversation, may_take_floor
from .policy import CameraContext, Decision, Override, PolicyConfig, SwitchingPolicy

log = logging.getLogger(__name__)
_REL_DB = SCENE_FEATURES.index("audio_rel_db")
_SPEECH = SCENE_FEATURES.index("speech_prob")
_DBFS = SCENE_FEATURES.index("audio_dbfs")
_SUBJECT = SCENE_FEATURES.index("subject_motion")
_PERSON = SCENE_FEATURES.index("largest_person_area")
# Prometheus series of every production session (a core with a sink); scraped from the service's /metrics and
# `aiobs live --metrics-port`; runtime/metrics.py lists them beside the runtime's own
TICKS = Counter("aiobs_director_ticks_total", "Director ticks decided", ["room", "variant"])
CUTS = Counter("aiobs_director_cuts_total", "Program cuts by the rule that made them", ["room", "reason"])
OVERRIDES = Counter("aiobs_director_overrides_total", "Operator overrides by outcome (obeyed; rejected: unknown or "
                    "stale camera; ignored: a release with nothing locked; live also counts unauthorised and "
                    "malformed)", ["room", "outcome"])
MODEL_IN_USE = Gauge("aiobs_director_model_info", "1 for the ranker version a room's session is directed with",
                     ["room", "variant", "model_version"], multiprocess_mode="livemax")

MAX_WORDS_PER_TICK = 64  # a tick of ASR output never carries more (a few seconds of speech, re-transcribed)
# a feature that is not nullable and arrives missing (NaN) is scored and logged as its contract default
_DEFAULTS = np.array([np.nan if CAMERA_TICKS[f].nullable else float(CAMERA_TICKS[f].default) for f in SCENE_FEATURES],
                     dtype=np.float32)
_INTEGER = np.array([CAMERA_TICKS[f].kind == "int" for f in RANKER_FEATURES])
_AUTO_REASONS = ("delta", "turn", "max_shot", "wide_fallback", "program_lost")


def f32(v: float) -> float:
    """A float as a Float32 column stores it."""
    return float(np.float32(v))


@dataclass(frozen=True)
class CameraTick:
    """One camera at one tick: every input the core uses, in the precision the feature log keeps."""

    camera_id: str
    x: np.ndarray  # scene features in SCENE_FEATURES order, float32, NaN = missing (nullable features only)
    speaking: bool = False  # VAD: speech on this camera's audio in the last ~100 ms
    speech_mask: int = 0  # VAD across the tick in 8 bins, bit 0 = oldest (word boundaries between ticks)
    safe_cut_wait_s: float = 0.0  # seconds until the current recognised word ends (0 = not inside a word)
    quiet_at: float | None = None  # session time inside a pause of this camera's audio during the last tick
    stale: bool = False  # no frames: never cut to it
    degraded: Mapping[str, str] = field(default_factory=dict)
    words: tuple[tuple[float, float], ...] = ()  # (start, end) of words the ASR recognised since the last tick

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float32).reshape(-1)
        if x.shape[0] != len(SCENE_FEATURES):
            raise ValueError(f"camera {self.camera_id}: {x.shape[0]} features, the contract has {len(SCENE_FEATURES)}")
        x = np.where(np.isnan(x), _DEFAULTS, x).astype(np.float32)
        object.__setattr__(self, "x", x)
        for name in ("safe_cut_wait_s", "quiet_at"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.floating))
                                  or not math.isfinite(v) or abs(v) > 1e9):
                raise ValueError(f"camera {self.camera_id}: {name} must be a finite number of seconds, not {v!r}")
        object.__setattr__(self, "safe_cut_wait_s", f32(max(0.0, self.safe_cut_wait_s)))
        object.__setattr__(self, "speaking", bool(self.speaking))
        if not isinstance(self.speech_mask, (int, np.integer)) or not 0 <= int(self.speech_mask) <= 255:
            raise ValueError(f"camera {self.camera_id}: speech_mask must be an 8-bit mask, not {self.speech_mask!r}")
        object.__setattr__(self, "speech_mask", int(self.speech_mask))
        object.__setattr__(self, "stale", bool(self.stale))
        if self.quiet_at is not None:
            object.__setattr__(self, "quiet_at", float(self.quiet_at))
        words = tuple(self.words)
        if len(words) > MAX_WORDS_PER_TICK:
            raise ValueError(f"camera {self.camera_id}: {len(words)} words in one tick (at most {MAX_WORDS_PER_TICK})")
        clean = []
        for w in words:
            try:
                a, b = (float(v) for v in w)
            except (TypeError, ValueError):
                raise ValueError(f"camera {self.camera_id}: a word is a (start, end) pair, not {w!r}") from None
            if not (math.isfinite(a) and math.isfinite(b) and a <= b and abs(a) <= 1e9 and abs(b) <= 1e9):
                raise ValueError(f"camera {self.camera_id}: a word's start and end must be finite, start <= end "
                                 f"(got {w!r})")
            clean.append((a, b))
        object.__setattr__(self, "words", tuple(clean))

    @classmethod
    def from_observation(cls, obs, x: np.ndarray) -> "CameraTick":
        """From an analysis `CameraObservation` and its row of `features.extract.scene_matrix`."""
        return cls(obs.camera_id, x, speaking=obs.speaking, speech_mask=obs.speech_mask,
                   safe_cut_wait_s=max(0.0, obs.next_safe_cut(obs.t) - obs.t), quiet_at=obs.quiet_at,
                   stale=obs.stale, degraded=dict(obs.degraded),
                   words=tuple((w.start, w.end) for w in obs.new_words)[-MAX_WORDS_PER_TICK:])

    @classmethod
    def from_features(cls, camera_id: str, features: Mapping[str, Any], **timing) -> "CameraTick":
        """From scene features by contract name (an external analyser's payload, an imported row). ValueError names
        the first problem: an unknown feature, a value that is not a finite number, a count that is not a whole
        non-negative number, a value outside the feature's range (`SCENE_BOUNDS`, from the contract). Missing features take
        their contract default (NULL for the nullable VLM ones)."""
        unknown = sorted(set(features) - set(SCENE_FEATURES))
        temporal = [f for f in unknown if f in RANKER_FEATURES]
        if temporal:
            raise ValueError(f"camera {camera_id}: {temporal} are temporal context features: the director core "
                             f"computes them from the session's ticks (features/temporal.py); send scene features only")
        if unknown:
            raise ValueError(f"camera {camera_id}: unknown feature(s) {unknown}; the contract's scene features are "
                             f"{list(SCENE_FEATURES)}")
        x = np.full(len(SCENE_FEATURES), np.nan, np.float32)
        for i, name in enumerate(SCENE_FEATURES):
            v = features.get(name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"camera {camera_id}: feature {name} must be a number, not {v!r}")
            if not math.isfinite(v) or not math.isfinite(np.float32(v)):
                raise ValueError(f"camera {camera_id}: feature {name} is not finite ({v!r})")
            if _INTEGER[i] and (v < 0 or float(v) != int(v)):
                raise ValueError(f"camera {camera_id}: feature {name} is a count, not {v!r}")
            lo, hi = SCENE_BOUNDS[name]
            if not lo <= v <= hi:
                raise ValueError(f"camera {camera_id}: feature {name} is {v!r}, outside its range {lo:g}..{hi:g}")
            x[i] = v
        return cls(camera_id, x, **timing)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "CameraTick":
        """From a logged camera_ticks row (dict of contract columns)."""
        x = np.array([np.nan if is_missing(row.get(f)) else row[f] for f in SCENE_FEATURES], dtype=np.float32)
        q = row.get("quiet_at")
        spans = row.get("asr_word_spans")
        spans = [] if spans is None or (not hasattr(spans, "__len__") and is_missing(spans)) else list(spans)
        return cls(str(row["camera_id"]), x, speaking=bool(row.get("speaking", False)),
                   speech_mask=int(row.get("speech_mask") or 0), safe_cut_wait_s=float(row.get("safe_cut_wait_s") or 0.0),
                   quiet_at=None if is_missing(q) else float(q), stale=bool(row.get("stale", False)),
                   degraded=dict(row.get("degraded") or {}), words=tuple(zip(spans[0::2], spans[1::2])))


def is_missing(v) -> bool:
    """None, NaN or pandas' NA (how a NULL comes back from ClickHouse through pandas)."""
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType"


def level_is_own(c: CameraTick, config: PolicyConfig) -> bool:
    """The camera's audio is at speaking level: within `own_speech_db` of the loudest camera."""
    return bool(c.x[_REL_DB] >= -config.own_speech_db) and not c.stale


def own_speech(cameras: Sequence[CameraTick], config: PolicyConfig) -> dict[str, bool]:
    """Whose speech is it? Speech heard on a camera is its own when its level is within `own_speech_db` of the
    loudest camera (`audio_rel_db`): a wide mic that hears a speaker as bleed does not count as that speaker.

    When several cameras with a person in frame hear the same mix (levels within `shared_audio_db`: one room mic,
    or a shared feed), the level cannot tell: the speech is the own speech of the camera whose subject visibly
    moves (`subject_motion`, a talking face) clearly more than the others', and of nobody when none does."""
    own = {c.camera_id: level_is_own(c, config) for c in cameras}
    group = [c for c in cameras if own[c.camera_id] and (c.speaking or c.speech_mask) and c.x[_PERSON] > FLOOR_MIN_PERSON_AREA]
    if len(group) >= 2:
        levels = np.array([c.x[_DBFS] for c in group])
        shared = [c for c, lv in zip(group, levels) if abs(lv - levels.max()) <= config.shared_audio_db]
        if len(shared) >= 2:
            motion = sorted(((float(c.x[_SUBJECT]), c.camera_id) for c in shared), reverse=True)
            talker = motion[0][1] if motion[0][0] >= config.visual_speaking_min \
                and motion[0][0] >= 1.5 * motion[1][0] else None
            for c in shared:
                own[c.camera_id] = c.camera_id == talker
    return own


def policy_contexts(t: float, cameras: Sequence[CameraTick], config: PolicyConfig,
                    talk: Conversation | None = None, owns: dict[str, bool] | None = None
                    ) -> dict[str, CameraContext]:
    """What the switching policy knows about each camera beyond its score: its own speech and word end, the pause
    in its audio during the last tick, staleness, and (with a conversation state) whether it is talking, since
    when, and whether it holds the floor."""
    out = {}
    owns = own_speech(cameras, config) if owns is None else owns
    for c in cameras:
        own = owns[c.camera_id]
        talking = talk is not None and talk.talking(c.camera_id, t)
        out[c.camera_id] = CameraContext(speaking=c.speaking and own,
                                         safe_cut_at=t + c.safe_cut_wait_s if own and c.safe_cut_wait_s > 0 else 0.0,
                                         quiet_at=c.quiet_at, stale=c.stale, talking=talking,
                                         floor=talk is not None and talk.holder == c.camera_id,
                                         floor_since=talk.holder_since if talk is not None
                                         and talk.holder == c.camera_id else None,
                                         onset=talk.onset(c.camera_id, t) if talking else None)
    return out


class RankerSource(Protocol):
    """Which ranker acts at session time t (`ranker_for`), and optionally which one scores in its shadow
    (`shadow_for`: its decisions are logged, never acted on; None = no shadow)."""

    def ranker_for(self, session_id: str, t: float | None = None) -> tuple[str, Any]: ...


@dataclass(frozen=True)
class FixedRanker:
    """One ranker for the whole session (files, replay)."""

    ranker: Any
    variant: str = "fixed"

    def ranker_for(self, session_id: str, t: float | None = None) -> tuple[str, Any]:
        return self.variant, self.ranker


@dataclass
class ShadowTick:
    """What the shadow arm would have done at this tick: its own scores, through its own copy of the policy."""

    variant: str
    model_version: str
    decision: Decision
    scores: dict[str, float]


@dataclass
class TickResult:
    k: int
    t: float
    decision: Decision
    scores: dict[str, float]
    contexts: dict[str, CameraContext]
    variant: str
    model_version: str
    overrides: list[Override]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> what was scored (RANKER_FEATURES)
    shadow: ShadowTick | None = None  # the shadow arm's would-be decision (A/B shadow mode), never acted on

    @property
    def cut_inside_speech(self) -> bool:
        """The cut lands inside a word of the outgoing camera's own speech (the policy's speech wait timed out)."""
        d = self.decision
        pc = self.contexts.get(d.from_camera)
        return bool(d.cut and d.from_camera and pc is not None and d.at is None and pc.mid_word(d.cut_time))


def ranker_features(state: TemporalState, t: float, tick_s: float, cams: Sequence[CameraTick]) -> np.ndarray:
    """One tick's ranker rows (RANKER_FEATURES, one per camera in `cams`' order): the scene features and the
    temporal context `state` (the session's) adds. The director core calls it every tick; `session_features` runs a
    whole session through it."""
    scene = np.stack([c.x for c in cams]) if cams else np.zeros((0, len(SCENE_FEATURES)), np.float32)
    context = state.update(t, tick_s, [c.camera_id for c in cams], scene, [c.speech_mask for c in cams],
                           [c.speaking for c in cams], [c.stale for c in cams])
    return np.hstack([scene, context])


def session_features(ticks: Sequence[tuple[float, Sequence[CameraTick]]], tick_s: float) -> list[np.ndarray]:
    """Every tick's ranker rows of a session (`ticks`: (t, cameras sorted by id), in order), as the director core
    computes them: the temporal context depends on the scene alone, never on the policy, so one pass serves every
    ranker and policy replayed on the session (ranker/evaluate.py `real_program`)."""
    state = TemporalState()
    return [ranker_features(state, t, tick_s, cams) for t, cams in ticks]


class DirectorCore:
    """One directed session: rank -> contexts -> policy -> explanation -> feature-log rows, once per tick.

    `rankers` is a ranker, or a `RankerSource` (the runtime model manager) asked before every tick, so a newly
    promoted model takes over between ticks. `sink` receives the feature-log rows (`append(table, row)`, e.g. a
    `features.spool.FeatureLog`); None = rows are not built (replay).

    A model that carries learned policy timing (`ranker.policy` of the session's first ranker, e.g. a registered
    champion's) directs the session with it (`PolicyConfig.with_tuned`): the session keeps that configuration for
    its whole length, also across a hot swap, and logs it. `model_policy=False` (replay) uses `policy` as given.
    """

    def __init__(self, session_id: str, *, policy: PolicyConfig | None = None, tick_s: float = 0.2,
                 rankers: Any = None, variant: str = "fixed", room: str = "", sink=None, synthetic: bool = False,
                 explain: bool = True, model_policy: bool = True, features: bool = True):
        from .baseline import WeightedBaselineRanker

        if not features and sink is not None:
            raise ValueError("a session that logs its rows builds its ranker features (features=True)")

        rankers = WeightedBaselineRanker() if rankers is None else rankers
        self.session_id = session_id
        self.room = room
        self.rankers: RankerSource = rankers if hasattr(rankers, "ranker_for") else FixedRanker(rankers, variant)
        self.config = policy or PolicyConfig()
        if model_policy:  # (a source may name the ranker whose timing directs: the champion's, with A/B blocks)
            policy_ranker = (self.rankers.policy_ranker(session_id) if hasattr(self.rankers, "policy_ranker")
                             else self.rankers.ranker_for(session_id)[1])
            self.config = self.config.with_tuned(getattr(policy_ranker, "policy", None))
        self.tick_s = float(tick_s)
        self.policy = SwitchingPolicy(self.config, self.tick_s)
        c = self.config
        self.talk = Conversation(utterance_gap_s=c.utterance_gap_s, min_turn_s=c.min_turn_s, takeover_s=c.takeover_s,
                                 keep_s=max(c.lookahead_s, self.tick_s) + 1.0)
        # the ranker's temporal context features, policy-independent; None (`features=False`, a replay of scored
        # rows, ranker/evaluate.py): every tick comes with its scores and the features are not rebuilt (a third of a
        # replayed tick's time; the policy never reads them)
        self.temporal = TemporalState() if features else None
        self.sink = sink
        self.synthetic = synthetic
        self.explain = explain
        self.k = 0
        self.program = ""
        self.shadow_policy: SwitchingPolicy | None = None  # the shadow arm's copy of the policy, from its first tick
        self._shadow_model = None
        self._last_on: dict[str, float] = {}
        self._model_label: tuple[str, str, str] | None = None
        self.config_json = json.dumps({**asdict(self.config), "tick_s": self.tick_s}, sort_keys=True,
                                      separators=(",", ":"))

    def tick(self, t: float, cameras: Sequence[CameraTick], overrides: Iterable[Override] = (), *,
             ts: float | None = None, scores: np.ndarray | None = None, started: float | None = None) -> TickResult:
        """Decide one tick at session time `t`. `scores` (one per camera, as logged) skips the ranker: replay.
        `started`: time.perf_counter() when the front door began this tick (its analysis), for the logged latency."""
        started = time.perf_counter() if started is None else started
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"the session clock must be finite, not {t!r}")
        cams = sorted(cameras, key=lambda c: c.camera_id)  # one order, whatever order the caller had
        if len(cams) != len({c.camera_id for c in cams}):
            raise ValueError(f"duplicate camera ids in one tick: {[c.camera_id for c in cameras]}")
        ovs = list(overrides)
        variant, ranker = self.rankers.ranker_for(self.session_id, t)
        version = str(getattr(ranker, "version", "")) if scores is None else ""
        if self.temporal is not None:
            x = ranker_features(self.temporal, t, self.tick_s, cams)
        elif scores is None:
            raise ValueError("this director core replays scored rows (features=False): give every tick its scores")
        else:
            x = np.zeros((len(cams), 0), np.float32)
        if scores is None:
            raw = np.asarray(ranker.score(x), dtype=np.float64).reshape(-1) if cams else np.zeros(0)
        else:
            order = {c.camera_id: i for i, c in enumerate(cameras)}
            raw = np.asarray(scores, dtype=np.float64).reshape(-1)[[order[c.camera_id] for c in cams]]
        # the precision the log keeps; a ranker's NaN/inf would break the policy's max(): it never wins
        s = np.nan_to_num(raw.astype(np.float32), nan=-1.0, posinf=-1.0, neginf=-1.0)
        score_map = {c.camera_id: float(v) for c, v in zip(cams, s)}
        own = own_speech(cams, self.config)
        # the floor needs a person in frame and a second of clear speech: a soundtrack never holds it
        can_hold = {c.camera_id for c in cams if may_take_floor(own[c.camera_id], c.x[_PERSON], c.x[_SPEECH],
                                                                 self.config.floor_min_speech_prob)}
        self.talk.update(t, self.tick_s, {c.camera_id: c.speech_mask if own[c.camera_id] else 0 for c in cams},
                         {c.camera_id: c.speech_mask for c in cams if level_is_own(c, self.config)}, can_hold,
                         words={c.camera_id: c.words for c in cams if c.words})
        ctx = policy_contexts(t, cams, self.config, self.talk, own)
        lookahead = self.config.lookahead_s

        def pauses(cameras):  # where the program audio may switch between these cameras' mics
            return self.talk.pauses(t - lookahead, t, self.config.min_pause_s, cameras) if lookahead > 0 else []

        d = self.policy.step(t, score_map, ctx, ovs, pauses)
        if self.explain and d.cut and d.reason in _AUTO_REASONS and scores is None:
            to = next(i for i, c in enumerate(cams) if c.camera_id == d.to_camera)
            why = ", ".join(f"{f} {v:+.2f}" for f, v in ranker.explain(x[to]))
            if why:
                d = _with_detail(d, f"{d.detail}; driven by {why}")
        latency_ms = (time.perf_counter() - started) * 1000.0  # the acting decision's, without the shadow's work
        shadow = self._shadow(t, cams, x, ctx, ovs, pauses) if scores is None and cams else None
        result = TickResult(self.k, t, d, score_map, ctx, variant, version, ovs,
                            {c.camera_id: row for c, row in zip(cams, x)} if self.temporal is not None else {},
                            shadow)
        if d.program:
            self._last_on[d.program] = t
        if self.sink is not None:  # a production session (not a replay): rows and Prometheus series
            self._log(result, cams, time.time() if ts is None else ts, latency_ms)
            self._count(result)
        self.program = d.program
        self.k += 1
        return result

    def _shadow(self, t, cams, x, ctx, ovs, pauses) -> ShadowTick | None:
        """A/B shadow mode: the other arm scores the same features and steps its own copy of the policy (taken
        from the acting policy when this shadow model starts; the operators' overrides reach both). It runs after the
        acting decision and can never change it: a shadow model that fails is logged and skipped."""
        try:
            arm = self.rankers.shadow_for(self.session_id, t) if hasattr(self.rankers, "shadow_for") else None
            if arm is None:
                self._shadow_model = None
                return None
            variant, ranker = arm
            if self.shadow_policy is None or self._shadow_model is not ranker:  # a new shadow: today's state
                self.shadow_policy = copy.deepcopy(self.policy)
                self._shadow_model = ranker
            raw = np.asarray(ranker.score(x), dtype=np.float64).reshape(-1)
            s = np.nan_to_num(raw.astype(np.float32), nan=-1.0, posinf=-1.0, neginf=-1.0)
            smap = {c.camera_id: float(v) for c, v in zip(cams, s)}
            d = self.shadow_policy.step(t, smap, ctx, ovs, pauses)
            return ShadowTick(variant, str(getattr(ranker, "version", "")), d, smap)
        except Exception:  # noqa: BLE001 - the shadow is evidence, never a reason to stop directing
            log.exception("director core: the shadow ranker failed at t=%.2f; the program is unaffected", t)
            self.shadow_policy = None
            return None

    def _count(self, r: TickResult) -> None:
        TICKS.labels(self.room, r.variant).inc()
        if r.decision.cut:
            CUTS.labels(self.room, r.decision.reason).inc()
        for outcome, _ in r.decision.outcomes:  # one per override of the tick
            OVERRIDES.labels(self.room, outcome).inc()
        label = (self.room, r.variant, r.model_version or "rules")
        if label != self._model_label:  # a hot swap: the old version is no longer in use here
            if self._model_label is not None:
                MODEL_IN_USE.labels(*self._model_label).set(0)
            MODEL_IN_USE.labels(*label).set(1)
            self._model_label = label

    # -- the feature-log rows ----------------------------------------------------------------------------------------
    def _log(self, r: TickResult, cams: Sequence[CameraTick], ts: float, latency_ms: float) -> None:
        key = {"session_id": self.session_id, "room": self.room, "synthetic": self.synthetic, "ts": ts, "tick": r.k}
        d = r.decision
        for c in cams:
            x = r.features[c.camera_id]
            row = {name: (None if np.isnan(v) else (int(v) if _INTEGER[i] else float(v)))
                   for i, (name, v) in enumerate(zip(RANKER_FEATURES, x.tolist()))}
            row.update(key, t=r.t, camera_id=c.camera_id, speaking=c.speaking, speech_mask=c.speech_mask,
                       safe_cut_wait_s=c.safe_cut_wait_s, asr_word_spans=[v for w in c.words for v in w],
                       quiet_at=c.quiet_at, on_program=d.program == c.camera_id,
                       since_on_program_s=r.t - self._last_on.get(c.camera_id, 0.0), score=r.scores[c.camera_id],
                       model_version=r.model_version, ab_variant=r.variant, stale=c.stale, degraded=dict(c.degraded))
            self.sink.append("camera_ticks", row)
        self.sink.append("decisions", {
            **key, "t": r.t, "program_camera": d.program or "", "cut": d.cut, "from_camera": d.from_camera,
            "to_camera": d.to_camera, "reason": d.reason, "detail": d.detail[:500], "transition": d.transition,
            "policy_state": d.state, "cut_at": d.at, "policy_config": self.config_json,
            "supervised": bool(r.overrides), "model_version": r.model_version, "ab_variant": r.variant,
            "latency_ms": round(latency_ms, 3), "cut_inside_speech": r.cut_inside_speech if d.cut else None})
        for o in r.overrides:
            self.sink.append("overrides", {**key, "t": r.t, "operator": o.operator, "action": o.action,
                                           "camera_id": o.camera, "timeout_s": o.timeout_s})
        if r.shadow is not None:
            sd = r.shadow.decision
            self.sink.append("shadow_decisions", {
                **key, "t": r.t, "program_camera": sd.program or "", "cut": sd.cut, "from_camera": sd.from_camera,
                "to_camera": sd.to_camera, "reason": sd.reason, "cut_at": sd.at, "acted_program": d.program or "",
                "scores": {k: f"{v:.6g}" for k, v in r.shadow.scores.items()},
                "model_version": r.shadow.model_version, "ab_variant": r.shadow.variant,
                "acted_variant": r.variant})


def _with_detail(d: Decision, detail: str) -> Decision:
    from dataclasses import replace

    return replace(d, detail=detail)


# -- replay ------------------------------------------------------------------------------------------------------------
def policy_from_log(policy_config: str) -> tuple[PolicyConfig, float]:
    """(PolicyConfig, tick_s) from a logged `decisions.policy_config`."""
    values = json.loads(policy_config)
    tick_s = float(values.pop("tick_s", 0.2))
    # settings added since: a log from before them replays under the behaviour it was decided with
    values.setdefault("onset_lead_s", 2 * float(values.get("min_pause_s", 0.05)))
    values.setdefault("turn_hold_s", float(values.get("min_hold_s", 2.0)))
    values.setdefault("delta_at_onset", False)
    values.setdefault("hold_speaker", False)
    return PolicyConfig.from_mapping(values), tick_s


def replay_logged(camera_ticks, decisions, overrides=None, *, ranker=None) -> list[Decision]:
    """Run a session's logged rows (pandas frames of one session) through a fresh director core.

    With `ranker` None the logged scores are used (reproduces what production decided); with a ranker the logged
    features are re-scored (what that ranker would have done under the same policy configuration).
    """
    configs = [c for c in decisions["policy_config"].unique().tolist() if c]
    if len(configs) != 1:
        raise ValueError(f"a session must log exactly one policy configuration, found {len(configs)}")
    config, tick_s = policy_from_log(configs[0])
    core = DirectorCore(str(decisions["session_id"].iloc[0]), policy=config, tick_s=tick_s,
                        rankers=ranker, explain=False, model_policy=False)
    by_tick_ov: dict[int, list[Override]] = {}
    if overrides is not None and len(overrides):
        for o in overrides.sort_values(["tick", "ts"]).itertuples(index=False):
            by_tick_ov.setdefault(int(o.tick), []).append(
                Override(str(o.action), str(o.camera_id or ""), None if is_missing(o.timeout_s) else float(o.timeout_s),
                         str(o.operator or "")))
    out = []
    ticks = camera_ticks.sort_values(["tick", "camera_id"])
    for k, g in ticks.groupby("tick", sort=True):
        rows = g.to_dict("records")
        cams = [CameraTick.from_row(r) for r in rows]
        scores = None if ranker is not None else np.array([r["score"] for r in rows], dtype=np.float64)
        out.append(core.tick(float(rows[0]["t"]), cams, by_tick_ov.get(int(k), ()), scores=scores).decision)
    return out
