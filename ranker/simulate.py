"""`aiobs simulate`: synthetic directed sessions in the real feature-log tables, for demos, scale tests and CI.

Each session has N cameras (a wide shot, speaker close-ups, an action camera), a latent scene (turn-taking speakers,
action bursts, keywords, VLM reads), features that are noisy views of that scene, and a hidden human director who
cuts by a configurable utility over the LATENT scene with human reaction time and hold. The director's cuts become
`overrides` (take events, the labels) and its program the supervised `decisions`. Every row has synthetic = true.
The rows carry the temporal context features the director core would have computed (features/temporal.py).

The default hidden director values action (crowd + motion) above speech and likes VLM-rated shots, which the rule
baseline (speech first) does not encode: a learned ranker has something real to learn. Director FAMILIES add choices
that depend on what happened in the last seconds, which no single tick shows:

- `utility`: the utility above, tick by tick;
- `patient`: a new speaker gets the picture only after talking for a while (2-4 s per session); until then, and
  through pauses, the director stays with the last speaker who had it;
- `reactions`: a keyword from the speaker asks for a reaction shot of the listener (the previous speaker; the wide
  shot when there is none) for 2-3.5 s;
- `silence`: a silence longer than 1.5-3 s goes wide (to the action camera when there is action); shorter ones stay on
  the last speaker.

The analysis setup varies too (`Sensors`, drawn per session by `draw_sensors` unless `sensors="ideal"`): framing,
whether faces are found, a VLM and ASR configured or not (their rows say so in `degraded`, as the real analysis's do),
mic bleed, a b-roll feed that always moves and sounds like speech. A ranker trained here cannot lean on one setup's
quirks; ranker/drift.py checks that the simulated features cover what the real analysis of recorded media produces.

`mixed` draws a family per session. Every session also draws its director's own minimum shot length (1.5-4 s) and
reaction lag. The family is part of the session id (`<prefix>-<family>-<seed>-<n>`), so results can be split by it.

The director's INTENT (per tick, the camera it wants before its reaction lag and minimum hold) is the simulation's
ground truth, never written to the feature log: `simulate(..., intents={})` collects it per session, and
bench/training.py scores a scene oracle with it (a ranker that knows what the director wants, but not its pace) and
a one-pace reference (the director's own rule, `human_program`, at one fixed pace), which together split what a
learned director still misses into the scene, the policy's rules and the director's pace.

The TYPICAL intent (`simulate(..., typical_intents={})`) is what a director wants who sees the whole scene but not
this human's private parameters: the family's per-session draws (patient's settling time, the reaction shot's length,
the silence before going wide) at the middle of their ranges, and no keyword where the session ran without ASR. Fed
to the director's own rule at one pace it bounds what ANY director that cannot read the human's mind agrees with them
(bench/training.py `typical_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import SCHEMA_VERSION, STAGE_OFF
from features.temporal import temporal_columns


FAMILIES = ("utility", "patient", "reactions", "silence")


@dataclass(frozen=True)
class HiddenDirector:
    w_action: float = 1.2  # an action burst on the camera
    w_speaker: float = 0.8  # the camera of the active speaker
    w_keyword: float = 0.5  # a keyword just said on the camera
    w_vlm: float = 0.35  # the camera's true visual interest (what a VLM rates)
    w_wide: float = 0.25  # the wide shot when nothing happens
    reaction_s: tuple[float, float] = (0.4, 1.2)
    min_hold_s: float = 2.5
    family: str = "utility"  # one of FAMILIES, or "mixed": one drawn per session
    randomise: bool = False  # draw this session's minimum hold (1.5-4 s) and reaction lag (families: always)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES + ("mixed",):
            raise ValueError(f"unknown director family {self.family!r}; one of {FAMILIES + ('mixed',)}")


@dataclass(frozen=True)
class Sensors:
    """How the analysis sees one session: which stages ran and how its detectors and microphones behave. The real
    analysis differs between setups (framing, detectors that find faces or not, a VLM or none, mic bleed, a b-roll
    feed whose sound is speech-like noise), so `SimConfig(sensors="varied")` draws one per session (`draw_sensors`)
    and a model trained on simulated sessions must not lean on any one setup's quirks. `Sensors()` is the
    idealised setup (every stage on, clean mics), `sensors="ideal"`."""
    faces: bool = True  # the face detector finds the faces (the real analysis of generated media finds none)
    vlm: bool = True  # a VLM is configured (about 20% of its reads still missing per tick)
    asr: bool = True  # speech recognition runs (words per second, keyword hits)
    closeup_area: float = 0.3  # a close-up's largest person box, share of the frame
    closeup_double: float = 0.0  # chance that a close-up's one person is counted twice (a detector artefact)
    wide_people: tuple[int, int] = (3, 7)  # people the wide shot's detector counts: [low, high)
    area_per_person: float = 0.04  # the wide and action shots' largest person box, per person counted
    motion: tuple[float, float] = (0.04, 0.02)  # idle motion energy: mean, spread
    broll_idle_motion: float = 0.04  # the action/b-roll camera's motion between bursts (b-roll never stands still)
    broll_idle_speech: float = 0.1  # its speech probability between bursts (speech-like noise in its sound)
    broll_idle_db: float = -52.0  # its level between bursts
    broll_people: bool = True  # people on the action camera between bursts (b-roll footage often has none)
    speaker_db: float = -18.0  # the speaker's own mic
    listener_gap_db: float = 16.0  # a listener's close-up mic below the speaker's (bleed)
    listener_speech: float = 0.28  # mean speech probability on a listener's mic while someone speaks
    speaker_speech: float = 0.8  # mean speech probability on the speaker's mic
    wide_gap_db: float = 10.0  # the wide (room) mic below the speaker's


def draw_sensors(rng: np.random.Generator) -> Sensors:
    """One session's analysis setup, from ranges that include what the real analysis of recorded media produces
    (ranker/drift.py and tests/test_drift.py check that they do)."""
    lo = int(rng.integers(1, 4))
    return Sensors(
        faces=bool(rng.random() < 0.5), vlm=bool(rng.random() < 0.5), asr=bool(rng.random() < 0.6),
        # tight close-ups that fill the frame (as the real analysis sees the sample's) in about 40% of sessions
        closeup_area=float(rng.uniform(0.85, 0.99) if rng.random() < 0.4 else rng.uniform(0.2, 0.85)),
        closeup_double=float(rng.uniform(0, 0.8)) if rng.random() < 0.5 else 0.0,
        wide_people=(lo, lo + int(rng.integers(1, 5))), area_per_person=float(rng.uniform(0.03, 0.25)),
        motion=(float(rng.uniform(0.02, 0.14)), float(rng.uniform(0.01, 0.03))),
        broll_idle_motion=float(rng.uniform(0.02, 0.26)), broll_idle_speech=float(rng.uniform(0.03, 0.8)),
        broll_idle_db=float(rng.uniform(-55, -36)), broll_people=bool(rng.random() < 0.5),
        speaker_db=float(rng.uniform(-30, -16)), listener_gap_db=float(rng.uniform(8, 28)),
        listener_speech=float(rng.uniform(0.15, 0.65)), speaker_speech=float(rng.uniform(0.65, 0.9)),
        wide_gap_db=float(rng.uniform(4, 16)))


@dataclass(frozen=True)
class SimConfig:
    cameras: int = 5
    duration_s: float = 300.0
    tick_hz: float = 5.0
    turn_s: float = 7.0  # mean speaker turn
    action_every_s: float = 15.0  # mean gap between action bursts
    director: HiddenDirector = field(default_factory=HiddenDirector)
    sensors: str = "varied"  # "varied": an analysis setup drawn per session (draw_sensors); "ideal": Sensors()

    def __post_init__(self) -> None:
        if self.sensors not in ("varied", "ideal"):
            raise ValueError(f"unknown sensors {self.sensors!r}; one of 'varied', 'ideal'")


def _runs(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tick: ticks since the current value of `active` began, and the previous different value (-1 = none)."""
    T = len(active)
    run, prev = np.zeros(T, int), np.full(T, -1)
    for k in range(1, T):
        same = active[k] == active[k - 1]
        run[k] = run[k - 1] + 1 if same else 0
        prev[k] = prev[k - 1] if same else active[k - 1]
    return run, prev


def _family_utility(rng, family: str, util: np.ndarray, active: np.ndarray, action: np.ndarray,
                    keyword: np.ndarray, hz: float, w_speaker: float, action_cam: int) -> np.ndarray:
    """The utility of a temporal director family (see the module docstring), over the latent scene."""
    T, C = util.shape
    ks = np.arange(T)
    if family == "utility":
        return util
    speaker = np.zeros((T, C))
    speaker[ks[active >= 0], active[active >= 0]] = 1.0
    base = util - w_speaker * speaker  # the family decides who the speaker term goes to
    run, _ = _runs(active)
    if family == "patient":
        settle = int(rng.uniform(2.0, 4.0) * hz)
        holder = np.full(T, -1)  # the last speaker who has talked `settle` ticks
        for k in range(T):
            holder[k] = active[k] if active[k] >= 0 and run[k] >= settle else (holder[k - 1] if k else -1)
        out = base.copy()
        out[ks[holder >= 0], holder[holder >= 0]] += w_speaker
        return out
    last = np.full(T, -1)  # the last speaker (through pauses) and the one before them
    before = np.full(T, -1)
    for k in range(T):
        a = active[k]
        last[k], before[k] = (last[k - 1], before[k - 1]) if k else (-1, -1)
        if a >= 0 and a != last[k]:
            before[k], last[k] = last[k], a
    if family == "reactions":
        out = util.copy()
        window = int(rng.uniform(2.0, 3.5) * hz)
        heard = keyword[ks, np.maximum(active, 0)] & (active >= 0)
        said = np.flatnonzero(heard & ~np.r_[False, heard[:-1]])  # the moments a keyword was said
        react = np.zeros(T, bool)
        who = np.full(T, 0)
        for k in said:
            if not react[k]:
                react[k:k + window] = True
                who[k:k + window] = before[k] if before[k] >= 0 else 0  # the listener, else the wide shot
        out[ks[react], who[react]] += 2.0 * w_speaker
        return out
    if family == "silence":
        out = base.copy()
        quiet = int(rng.uniform(1.5, 3.0) * hz)
        silent_for = np.where(active < 0, run, 0)
        hold = (active >= 0) | (silent_for < quiet)
        out[ks[hold & (last >= 0)], last[hold & (last >= 0)]] += w_speaker
        go = ~hold
        out[ks[go], np.where(action[go], action_cam, 0)] += 2.0 * w_speaker
        return out
    raise ValueError(family)


class _MidRange:
    """Stands in for the random generator where a family draws its per-session parameters: each at the middle of its
    range (the `typical` intent; it draws nothing from the session's generator)."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return (low + high) / 2


def human_program(want: np.ndarray, t: np.ndarray, min_hold_s: float, reaction) -> np.ndarray:
    """The hidden director's program from its intent (`want`, the camera index per tick at times `t`): a change it
    wants is cut after its reaction lag (`reaction()`, drawn when the change first shows; it starts over when the
    intent comes back to the shot on air) and never before `min_hold_s` since its last cut."""
    program = np.empty(len(want), int)
    program[0] = want[0]
    last_cut, pending_since, react = 0.0, None, 0.0
    for k in range(1, len(want)):
        program[k] = program[k - 1]
        if want[k] == program[k]:
            pending_since = None
            continue
        if pending_since is None:
            pending_since, react = t[k], reaction()
        if t[k] - pending_since >= react and t[k] - last_cut >= min_hold_s:
            program[k] = want[k]
            last_cut, pending_since = t[k], None
    return program


def _session(rng: np.random.Generator, cfg: SimConfig, session_id: str, t0: float,
             family: str = "utility", sensors: Sensors | None = None) -> dict[str, pd.DataFrame]:
    sensors = sensors or Sensors()
    C, hz = cfg.cameras, cfg.tick_hz
    T = int(cfg.duration_s * hz)
    cams = [f"cam{i + 1}" for i in range(C)]
    speakers = list(range(1, C - 1))  # cam2..cam(C-1)
    action_cam = C - 1
    t = np.arange(T) / hz

    # -- latent scene ------------------------------------------------------------------------------------------------
    active = np.full(T, -1)  # index of the speaking camera, -1 = nobody
    i = 0
    while i < T:
        n = int(rng.exponential(cfg.turn_s) * hz) + int(2 * hz)
        active[i:i + n] = rng.choice(speakers) if rng.random() > 0.25 else -1
        i += n + int(rng.uniform(0.3, 1.0) * hz)
    action = np.zeros(T, bool)
    i = int(rng.exponential(cfg.action_every_s) * hz)
    while i < T:
        n = int(rng.uniform(3, 8) * hz)
        action[i:i + n] = True
        i += n + int(rng.exponential(cfg.action_every_s) * hz)
    keyword = np.zeros((T, C), bool)
    kw_ticks = np.flatnonzero((active >= 0) & (rng.random(T) < 0.02))
    for k in kw_ticks:
        keyword[k:k + int(3 * hz), active[k]] = True
    interest = np.zeros((T, C))  # true visual interest 0..1, slowly varying
    for c in range(C):
        walk = np.cumsum(rng.normal(0, 0.03, T))
        interest[:, c] = 1 / (1 + np.exp(-(walk - walk.mean()) * 1.5))
    interest[:, action_cam] = np.maximum(interest[:, action_cam], action * 0.9)

    # -- observed features: noisy views of the latent scene, as this session's analysis setup sees it ----------------
    p = sensors
    shape = (T, C)
    closeups = slice(1, C - 1)
    is_speaker = np.zeros(shape, bool)
    is_speaker[np.arange(T)[active >= 0], active[active >= 0]] = True
    anyone = (active >= 0)[:, None]

    def beta(mean, n=10.0, size=shape):
        mean = float(np.clip(mean, 0.02, 0.98))
        return rng.beta(mean * n, (1 - mean) * n, size)

    speech = np.where(is_speaker, beta(p.speaker_speech), np.where(anyone, beta(p.listener_speech),
                                                                   rng.beta(1, 9, shape)))
    speech[:, action_cam] = np.where(action, beta(0.3, size=T), beta(p.broll_idle_speech, size=T))
    dbfs = np.where(is_speaker, rng.normal(p.speaker_db, 2.5, shape),
                    np.where(anyone, rng.normal(p.speaker_db - p.listener_gap_db, 3, shape), rng.normal(-52, 3, shape)))
    dbfs[:, action_cam] = np.where(action, rng.normal(-16, 2, T), rng.normal(p.broll_idle_db, 3, T))
    dbfs[:, 0] = np.where(anyone[:, 0], rng.normal(p.speaker_db - p.wide_gap_db, 2, T), dbfs[:, 0])  # the room
    rel = dbfs - dbfs.max(axis=1, keepdims=True)
    people = np.zeros(shape, int)
    people[:, 0] = rng.integers(*p.wide_people, T)
    people[:, closeups] = 1 + (rng.random((T, C - 2)) < p.closeup_double)
    people[:, action_cam] = np.where(action, rng.integers(3, 9, T), rng.integers(0, 3, T) if p.broll_people else 0)
    motion = np.clip(rng.normal(*p.motion, shape), 0, 1)
    motion[:, action_cam] = np.clip(np.where(action, rng.normal(0.45, 0.1, T),
                                             rng.normal(p.broll_idle_motion, p.motion[1], T)), 0, 1)
    motion[:, 0] = np.clip(motion[:, 0] + action * rng.normal(0.1, 0.03, T), 0, 1)
    seen = people > 0
    person_area = np.clip(people * p.area_per_person, 0, 0.6)  # the wide and action shots: smaller people
    person_area[:, closeups] = np.clip(rng.normal(p.closeup_area, 0.04, (T, C - 2)), 0.05, 0.99)  # a close-up
    person_area = np.where(seen, person_area, 0.0)
    centrality = np.where(seen, np.clip(rng.normal(0.7, 0.15, shape), 0, 1), 0.0)
    centrality[:, closeups] = np.clip(rng.normal(0.9, 0.06, (T, C - 2)), 0, 1)
    subject_motion = np.where(seen, np.clip(motion * rng.uniform(0.6, 1.1, shape) + rng.normal(0, 0.01, shape), 0, 1),
                              0.0)
    face_area = np.zeros(shape)
    if p.faces:
        face_area[:, closeups] = np.clip(rng.normal(0.12 * p.closeup_area, 0.006, (T, C - 2)), 0, 1)
        face_area[:, 0] = np.clip(rng.normal(0.002, 0.001, T), 0, 1)
    faces = face_area > 0.01
    vlm = np.clip(1 + 4 * interest + rng.normal(0, 0.5, shape), 1, 5).round()
    vlm_age = (np.arange(T)[:, None] % int(3.5 * hz)) / hz + rng.uniform(0, 0.7, shape)
    vlm_missing = (rng.random(shape) < 0.2) | (not p.vlm)
    kw_hits = (keyword & (rng.random(shape) < 0.6) & p.asr).astype(int)
    words = np.where(is_speaker & p.asr, rng.normal(2.5, 0.4, shape), 0.0).clip(0)
    degraded = {stage: why for stage, why in STAGE_OFF.items() if not getattr(p, stage)}  # as the engine writes it
    # phrases: a speaker pauses for a tick roughly every 0.8-1.4 s (the policy's word boundaries)
    phrase = rng.integers(4, 8, C)
    speaking = is_speaker & ((np.arange(T)[:, None] + rng.integers(0, 8, C)) % phrase != 0)

    # -- the hidden human director --------------------------------------------------------------------------------
    d = cfg.director
    util = d.w_vlm * interest + d.w_speaker * is_speaker + d.w_keyword * keyword
    util[:, action_cam] += d.w_action * action
    util[:, 0] += d.w_wide * ((active < 0) & ~action)
    # what a director who sees the scene but not this human's private parameters would want: the family's per-session
    # draws at the middle of their ranges, and no keyword where no speech recognition ran (the `typical` intent)
    seen_kw = keyword if p.asr else np.zeros_like(keyword)
    typical = _family_utility(_MidRange(), family, util - d.w_keyword * (keyword & ~seen_kw), active, action, seen_kw,
                              hz, d.w_speaker, action_cam).argmax(axis=1)
    util = _family_utility(rng, family, util, active, action, keyword, hz, d.w_speaker, action_cam)
    want = util.argmax(axis=1)
    min_hold, reaction = d.min_hold_s, d.reaction_s
    if d.randomise or family != "utility":  # this director's own pace
        min_hold = float(rng.uniform(1.5, 4.0))
        lo = float(rng.uniform(0.2, 0.8))
        reaction = (lo, lo + float(rng.uniform(0.2, 0.8)))
    program = human_program(want, t, min_hold, lambda: rng.uniform(*reaction))

    # -- rows -----------------------------------------------------------------------------------------------------
    ts = t0 + t
    since = np.zeros(shape)
    last_on = np.full(C, t0)
    for k in range(T):
        last_on[program[k]] = ts[k]
        since[k] = ts[k] - last_on
    on_prog = np.zeros(shape, bool)
    on_prog[np.arange(T), program] = True
    n = T * C
    ticks = pd.DataFrame({
        "schema_version": SCHEMA_VERSION, "session_id": session_id, "room": "simulated", "synthetic": True,
        "ts": np.repeat(ts, C), "tick": np.repeat(np.arange(T), C), "t": np.repeat(t, C),
        "camera_id": np.tile(cams, T),
        "people_count": people.ravel(), "largest_person_area": person_area.ravel(),
        "person_centrality": centrality.ravel(),
        "track_continuity": np.where(seen.ravel(), np.clip(rng.normal(0.85, 0.1, n), 0, 1), 0.0),
        "track_age_s": np.where(seen.ravel(), rng.uniform(0, 30, n), 0.0),
        "person_speed": np.where(seen.ravel(), np.clip(motion.ravel() * 0.1, 0, 1), 0.0),
        "face_count": faces.ravel().astype(int), "largest_face_area": np.where(faces, face_area, 0.0).ravel(),
        "face_centrality": np.where(faces.ravel(), np.clip(rng.normal(0.6, 0.2, n), 0, 1), 0.0),
        "motion_energy": motion.ravel(), "subject_motion": subject_motion.ravel(),
        "audio_dbfs": np.clip(dbfs.ravel(), -120, 0),
        "audio_rel_db": rel.ravel(), "speech_prob": speech.ravel(), "keyword_hits": kw_hits.ravel(),
        "asr_words_per_s": words.ravel(),
        "vlm_interest": np.where(vlm_missing.ravel(), np.nan, vlm.ravel()),
        "vlm_age_s": np.where(vlm_missing.ravel(), np.nan, vlm_age.ravel()),
        "speaking": speaking.ravel(), "speech_mask": np.where(speaking.ravel(), 255, 0).astype(np.uint8),
        "safe_cut_wait_s": 0.0,
        # a pause in the camera's audio during the tick (where a cut may be placed); NULL while speech runs on
        "quiet_at": np.where(speaking.ravel(), np.nan, np.repeat(t, C) - 0.5 / hz),
        "on_program": on_prog.ravel(), "since_on_program_s": since.ravel(), "score": np.nan,
        "model_version": "human", "ab_variant": "human", "stale": False, "degraded": [degraded] * n,
    })
    ticks = pd.concat([ticks, temporal_columns(ticks, tick_s=1.0 / hz)], axis=1)  # what the director core computes
    cut = np.r_[True, program[1:] != program[:-1]]
    decisions = pd.DataFrame({
        "schema_version": SCHEMA_VERSION, "session_id": session_id, "room": "simulated", "synthetic": True,
        "ts": ts, "tick": np.arange(T), "t": t, "program_camera": np.array(cams)[program], "cut": cut,
        "from_camera": np.where(cut, np.r_[[""], np.array(cams)[program[:-1]]], ""),
        "to_camera": np.where(cut, np.array(cams)[program], ""), "reason": np.where(cut, "human", "hold"),
        "detail": "", "transition": np.where(cut, "cut", ""), "policy_state": "", "supervised": True,
        "model_version": "human", "ab_variant": "human",
    })
    ks = np.flatnonzero(cut)
    overrides = pd.DataFrame({
        "schema_version": SCHEMA_VERSION, "session_id": session_id, "room": "simulated", "synthetic": True,
        "ts": ts[ks], "tick": ks, "t": t[ks], "operator": "sim-director", "action": "take",
        "camera_id": np.array(cams)[program[ks]], "timeout_s": np.nan,
    })
    return {"camera_ticks": ticks, "decisions": decisions, "overrides": overrides,
            "intent": pd.DataFrame({"tick": np.arange(T), "camera_id": np.array(cams)[want],
                                    "typical_camera_id": np.array(cams)[typical]})}


def session_frames(config: SimConfig | None = None, seed: int = 0, index: int = 0, prefix: str = "sim",
                   t0: float = 1_790_000_000.0) -> dict[str, pd.DataFrame]:
    """One simulated session's tables (camera_ticks, decisions = the hidden director's program, overrides) and its
    director's `intent` (tick, camera_id: what it wanted before its lag and hold), not written anywhere: the input
    of `operate`."""
    cfg = config or SimConfig()
    family = cfg.director.family
    if family == "mixed":
        family = FAMILIES[int(np.random.default_rng([seed, 1, index]).integers(len(FAMILIES)))]
    name = f"{prefix}-{family}-{seed}-{index:05d}"
    sensors = draw_sensors(np.random.default_rng([seed, 2, index])) if cfg.sensors == "varied" else Sensors()
    return _session(np.random.default_rng([seed, 3, index]), cfg, name, t0 + index * (cfg.duration_s + 60), family,
                    sensors)


def operate(frames: dict[str, pd.DataFrame], core, patience_s: float = 1.5, operator: str = "sim-operator") -> dict:
    """A live session through the director core with a simulated operator watching: the core directs the session's
    cameras (its rows go to the core's sink, as live rows do); whenever the program has differed from the hidden
    director's choice for `patience_s`, the operator takes that camera (an override, logged by the core). Returns
    {"ticks", "overrides", "agree"} (agree: share of ticks the acted program matched the operator's choice)."""
    from .core import CameraTick
    from .policy import Override

    by_tick: dict[int, list[dict]] = {}
    for row in frames["camera_ticks"].sort_values(["tick", "camera_id"]).to_dict("records"):  # once: not per tick
        by_tick.setdefault(int(row["tick"]), []).append(row)
    want = dict(zip(frames["decisions"]["tick"].astype(int), frames["decisions"]["program_camera"].astype(str)))
    first = frames["decisions"].sort_values("tick").iloc[0]
    ts0 = (first["ts"].timestamp() if hasattr(first["ts"], "timestamp") else float(first["ts"])) - float(first["t"])
    since, n_ov, agree, n = None, 0, 0, 0
    for k, rows in sorted(by_tick.items()):
        t = float(rows[0]["t"])
        wanted = want.get(int(k), "")
        ovs = []
        if core.program and wanted and core.program != wanted:
            since = t if since is None else since
            if t - since >= patience_s - 1e-9:
                ovs = [Override("take", wanted, None, operator)]
                n_ov += 1
                since = None
        else:
            since = None
        r = core.tick(t, [CameraTick.from_row(row) for row in rows], ovs, ts=ts0 + t)
        agree += int(r.decision.program == wanted)
        n += 1
    return {"ticks": n, "overrides": n_ov, "agree": agree / max(1, n)}


def simulate(store, sessions: int, config: SimConfig | None = None, seed: int = 0, t0: float = 1_790_000_000.0,
             prefix: str = "sim", intents: dict | None = None, typical_intents: dict | None = None) -> dict[str, int]:
    """Write `sessions` synthetic sessions into the store's tables; returns rows written per table. `intents`, a dict,
    receives each session's director intent (session id -> the wanted camera id per tick, a numpy array);
    `typical_intents` the intent with the family's per-session parameters at mid-range and keywords only where ASR
    ran (see the module docstring)."""
    cfg = config or SimConfig()
    rng = np.random.default_rng(seed)
    store.ensure_schema()
    counts = {"camera_ticks": 0, "decisions": 0, "overrides": 0}
    plan = []
    families = np.random.default_rng([seed, 1])  # its own stream: the sessions' draws do not depend on it
    for s in range(sessions):
        family = cfg.director.family
        if family == "mixed":
            family = FAMILIES[int(families.integers(len(FAMILIES)))]
        plan.append((s, family, f"{prefix}-{seed}-{s:05d}" if cfg.director.family == "utility"
                     else f"{prefix}-{family}-{seed}-{s:05d}"))
    if hasattr(store, "sessions") and plan:  # a session is never written twice (its rows and labels would double)
        known = store.sessions(among=[name for _, _, name in plan])
        if known:
            raise ValueError(f"simulated session(s) {known[:3]}{' ...' if len(known) > 3 else ''} are already in the "
                             f"feature log: pick another --seed to add sessions")
    for s, family, name in plan:
        start = t0 + s * (cfg.duration_s + 60)
        sensors = draw_sensors(np.random.default_rng([seed, 2, s])) if cfg.sensors == "varied" else Sensors()
        frames = _session(rng, cfg, name, start, family, sensors)
        intent = frames.pop("intent")
        if intents is not None:
            intents[name] = intent["camera_id"].to_numpy()
        if typical_intents is not None:
            typical_intents[name] = intent["typical_camera_id"].to_numpy()
        for table, df in frames.items():
            store.insert_frame(table, df)
            counts[table] += len(df)
    return counts



def family_of(session_id: str) -> str:
    """The director family a simulated session was made with ("" for a session that is not a family's)."""
    parts = session_id.split("-")
    return next((p for p in parts[1:2] if p in FAMILIES), "utility" if len(parts) == 3 else "")
