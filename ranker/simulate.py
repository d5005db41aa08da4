"""`aiobs simulate`: synthetic directed sessions in the real feature-log tables, for demos, scale tests and CI.

Each session has N cameras (a wide shot, speaker close-ups, an action camera), a latent scene (turn-taking speakers,
action bursts, keywords, VLM reads), features that are noisy views of that scene, and a hidden human director who
cuts by a configurable utility over the LATENT scene with human reaction time and hold. The director's cuts become
`overrides` (take events, the labels) and its program the supervised `decisions`. Every row has synthetic = true.

The default hidden director values action (crowd + motion) above speech and likes VLM-rated shots, which the rule
baseline (speech first) does not encode: a learned ranker has something real to learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.schema import SCHEMA_VERSION
from features.temporal import temporal_columns


@dataclass(frozen=True)
class HiddenDirector:
    w_action: float = 1.2  # an action burst on the camera
    w_speaker: float = 0.8  # the camera of the active speaker
    w_keyword: float = 0.5  # a keyword just said on the camera
    w_vlm: float = 0.35  # the camera's true visual interest (what a VLM rates)
    w_wide: float = 0.25  # the wide shot when nothing happens
    reaction_s: tuple[float, float] = (0.4, 1.2)
    min_hold_s: float = 2.5


@dataclass(frozen=True)
class SimConfig:
    cameras: int = 5
    duration_s: float = 300.0
    tick_hz: float = 5.0
    turn_s: float = 7.0  # mean speaker turn
    action_every_s: float = 15.0  # mean gap between action bursts
    director: HiddenDirector = field(default_factory=HiddenDirector)


def _session(rng: np.random.Generator, cfg: SimConfig, session_id: str, t0: float) -> dict[str, pd.DataFrame]:
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

    # -- observed features: noisy views of the latent scene -----------------------------------------------------
    shape = (T, C)
    is_speaker = np.zeros(shape, bool)
    is_speaker[np.arange(T)[active >= 0], active[active >= 0]] = True
    anyone = (active >= 0)[:, None]
    speech = np.where(is_speaker, rng.beta(8, 2, shape), np.where(anyone, rng.beta(2, 5, shape), rng.beta(1, 9, shape)))
    dbfs = np.where(is_speaker, rng.normal(-18, 2.5, shape), np.where(anyone, rng.normal(-34, 3, shape),
                                                                      rng.normal(-52, 3, shape)))
    dbfs[:, action_cam] = np.where(action, rng.normal(-16, 2, T), dbfs[:, action_cam])
    dbfs[:, 0] = np.where(anyone[:, 0], rng.normal(-28, 2, T), dbfs[:, 0])  # the wide mic hears the room
    rel = dbfs - dbfs.max(axis=1, keepdims=True)
    people = np.zeros(shape, int)
    people[:, 0] = rng.integers(3, 7, T)
    people[:, 1:C - 1] = 1
    people[:, action_cam] = np.where(action, rng.integers(3, 9, T), rng.integers(0, 3, T))
    motion = np.clip(rng.normal(0.04, 0.02, shape), 0, 1)
    motion[:, action_cam] = np.clip(np.where(action, rng.normal(0.45, 0.1, T), motion[:, action_cam]), 0, 1)
    motion[:, 0] = np.clip(motion[:, 0] + action * rng.normal(0.1, 0.03, T), 0, 1)
    person_area = np.clip(people * 0.04, 0, 0.6)  # the wide and action shots: small people
    person_area[:, 1:C - 1] = np.clip(rng.normal(0.3, 0.05, (T, C - 2)), 0.05, 0.6)  # a close-up fills the frame
    face_area = np.zeros(shape)
    face_area[:, 1:C - 1] = np.clip(rng.normal(0.035, 0.006, (T, C - 2)), 0, 1)
    face_area[:, 0] = np.clip(rng.normal(0.002, 0.001, T), 0, 1)
    vlm = np.clip(1 + 4 * interest + rng.normal(0, 0.5, shape), 1, 5).round()
    vlm_age = (np.arange(T)[:, None] % int(3.5 * hz)) / hz + rng.uniform(0, 0.7, shape)
    vlm_missing = rng.random(shape) < 0.2
    kw_hits = (keyword & (rng.random(shape) < 0.6)).astype(int)
    # phrases: a speaker pauses for a tick roughly every 0.8-1.4 s (the policy's word boundaries)
    phrase = rng.integers(4, 8, C)
    speaking = is_speaker & ((np.arange(T)[:, None] + rng.integers(0, 8, C)) % phrase != 0)

    # -- the hidden human director --------------------------------------------------------------------------------
    d = cfg.director
    util = d.w_vlm * interest + d.w_speaker * is_speaker + d.w_keyword * keyword
    util[:, action_cam] += d.w_action * action
    util[:, 0] += d.w_wide * ((active < 0) & ~action)
    want = util.argmax(axis=1)
    program = np.empty(T, int)
    program[0] = want[0]
    last_cut, pending_since = 0.0, None
    for k in range(1, T):
        program[k] = program[k - 1]
        if want[k] == program[k]:
            pending_since = None
            continue
        if pending_since is None:
            pending_since, react = t[k], rng.uniform(*d.reaction_s)
        if t[k] - pending_since >= react and t[k] - last_cut >= d.min_hold_s:
            program[k] = want[k]
            last_cut, pending_since = t[k], None

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
        "person_centrality": np.clip(rng.normal(0.7, 0.15, n), 0, 1),
        "track_continuity": np.clip(rng.normal(0.85, 0.1, n), 0, 1), "track_age_s": rng.uniform(0, 30, n),
        "person_speed": np.clip(motion.ravel() * 0.3, 0, 1), "face_count": (face_area.ravel() > 0.01).astype(int),
        "largest_face_area": face_area.ravel(), "face_centrality": np.clip(rng.normal(0.6, 0.2, n), 0, 1),
        "motion_energy": motion.ravel(), "audio_dbfs": np.clip(dbfs.ravel(), -120, 0),
        "audio_rel_db": rel.ravel(), "speech_prob": speech.ravel(), "keyword_hits": kw_hits.ravel(),
        "asr_words_per_s": np.where(is_speaker.ravel(), rng.normal(2.5, 0.4, n), 0.0).clip(0),
        "vlm_interest": np.where(vlm_missing.ravel(), np.nan, vlm.ravel()),
        "vlm_age_s": np.where(vlm_missing.ravel(), np.nan, vlm_age.ravel()),
        "speaking": speaking.ravel(), "speech_mask": np.where(speaking.ravel(), 255, 0).astype(np.uint8),
        "safe_cut_wait_s": 0.0,
        # a pause in the camera's audio during the tick (where a cut may be placed); NULL while speech runs on
        "quiet_at": np.where(speaking.ravel(), np.nan, np.repeat(t, C) - 0.5 / hz),
        "on_program": on_prog.ravel(), "since_on_program_s": since.ravel(), "score": np.nan,
        "model_version": "human", "ab_variant": "human", "stale": False, "degraded": [{}] * n,
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
    return {"camera_ticks": ticks, "decisions": decisions, "overrides": overrides}


def simulate(store, sessions: int, config: SimConfig | None = None, seed: int = 0, t0: float = 1_790_000_000.0,
             prefix: str = "sim") -> dict[str, int]:
    """Write `sessions` synthetic sessions into the store's tables; returns rows written per table."""
    cfg = config or SimConfig()
    rng = np.random.default_rng(seed)
    store.ensure_schema()
    counts = {"camera_ticks": 0, "decisions": 0, "overrides": 0}
    for s in range(sessions):
        start = t0 + s * (cfg.duration_s + 60)
        frames = _session(rng, cfg, f"{prefix}-{seed}-{s:05d}", start)
        for name, df in frames.items():
            store.insert_frame(name, df)
            counts[name] += len(df)
    return counts

