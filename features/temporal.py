"""Temporal context: what happened on each camera and in the room over the last seconds, as ranker features.

A ranker that sees one tick at a time cannot learn a director who waits until someone has spoken for a while, cuts
to a reaction after a keyword or goes wide after a long silence. `TemporalState` (one per session) turns the stream
of ticks into the contract's `context` columns (features/schema.py: `speech_run_s`, `since_spoke_s`,
`since_anyone_spoke_s`, `since_keyword_s`, `since_keyword_any_s`, `speech_share_5s`, `motion_mean_2s`,
`motion_trend`, `people_mean_2s`, `floor_holder`, `floor_s`, `last_utterance_s`, `settled_speaker`,
`settled_s`).

Written once, used by every path:
- the director core (ranker/core.py) updates it once per tick, after the scene features and before scoring, and
  logs its output beside them: live, `aiobs direct`, the `/tick` service and `aiobs import` all go through the core;
- the simulator (ranker/simulate.py) runs its sessions' rows through it (`temporal_columns`);
- training and evaluation read the logged columns, so a model learns from exactly what the runtime computed; a
  replay of the logged rows recomputes the same values (its inputs are logged columns, in their logged precision).

Its inputs are a tick's scene features (`audio_rel_db`, `speech_prob`, `keyword_hits`, `motion_energy`,
`people_count`, `largest_person_area`), the VAD's `speech_mask`/`speaking` and `stale`. Its parameters are fixed
here, not the switching policy's: tuning the policy never changes what a model learned from. Speech counts as a
camera's own within `OWN_SPEECH_DB` of the loudest camera; the floor is the conversation state of
features/conversation.py. The settled speaker is the last camera whose turn (sentences with pauses of at most
`SETTLED_GAP_S`) lasted `SETTLED_S`: a director who lets a new speaker settle before cutting to them stays with that
one through a short interjection, which the floor (passed after `MIN_TURN_S`) does not show. Times are capped at
`HORIZON_S` ("not within the horizon"); means are exponential in session time, so they do not depend on the tick
rate. No program state enters (what is on program, for how long): a ranker that saw it would learn "stay where you
are".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .conversation import TIME_EPS_S, Conversation, SpeechRuns, may_take_floor
from .extract import SCENE_FEATURES, TEMPORAL_FEATURES

HORIZON_S = 30.0  # "since" features are capped here: longer ago (or never) reads as the horizon
OWN_SPEECH_DB = 6.0  # speech is a camera's own within this many dB of the loudest camera
UTTERANCE_GAP_S = 0.5  # a silence longer than this ends an utterance
MIN_TURN_S = 1.0  # the floor passes after this much speech once the holder stopped
TAKEOVER_S = 2.5  # ... or after this much while the holder still talks
# the settled speaker: the last camera whose turn (its speech with no pause longer than SETTLED_GAP_S: sentences of one
# turn) lasted this long (issue 10: with it and `last_utterance_s`, a ranker learned the simulated patient directors
# 1.1-1.3 points of replay agreement better, on 23 and on 74 training sessions)
SETTLED_S = 3.0
SETTLED_GAP_S = 1.0
FLOOR_MIN_SPEECH_PROB = 0.6
TAU_S = {"motion_mean_2s": 2.0, "motion_fast": 1.0, "motion_slow": 5.0, "people_mean_2s": 2.0,
         "speech_share_5s": 5.0}

_REL = SCENE_FEATURES.index("audio_rel_db")
_SPEECH = SCENE_FEATURES.index("speech_prob")
_KEYWORD = SCENE_FEATURES.index("keyword_hits")
_MOTION = SCENE_FEATURES.index("motion_energy")
_PEOPLE = SCENE_FEATURES.index("people_count")
_PERSON = SCENE_FEATURES.index("largest_person_area")
_ALL_BINS = 0xFF
_LAST_BIN = 0x80


@dataclass
class _Camera:
    t: float  # session time of its last update
    last_keyword: float | None = None
    speech_share: float = 0.0
    motion_2s: float = 0.0
    motion_fast: float = 0.0
    motion_slow: float = 0.0
    people_2s: float = 0.0
    last_utterance: float = 0.0  # seconds its latest utterance lasted (the current one while it talks)


def _ema(prev: float, value: float, dt: float, tau: float) -> float:
    return prev + (1.0 - math.exp(-dt / tau)) * (value - prev)


def _seconds(v: float) -> float:
    return round(max(0.0, v), 4)  # the mask bins' float sums are not exact: 0.1 ms is plenty


def _since(t: float, then: float | None) -> float:
    return HORIZON_S if then is None else min(HORIZON_S, _seconds(t - then))


class TemporalState:
    """One session's temporal context. `update` once per tick, in session-time order; a camera seen for the first
    time starts fresh (its means at its current values, its "since" features at the horizon)."""

    def __init__(self) -> None:
        self.cameras: dict[str, _Camera] = {}
        self.talk = Conversation(utterance_gap_s=UTTERANCE_GAP_S, min_turn_s=MIN_TURN_S, takeover_s=TAKEOVER_S,
                                 keep_s=1.0)
        self.last_keyword_any: float | None = None
        self.settled: str | None = None  # the settled speaker (SETTLED_S) and since when
        self.settled_since: float = 0.0
        # each camera's current (or last) turn: sentences with short pauses
        self.turns = SpeechRuns(SETTLED_GAP_S, tolerance_s=TIME_EPS_S)

    def update(self, t: float, tick_s: float, camera_ids: Sequence[str], x: np.ndarray, speech_masks: Sequence[int],
               speaking: Sequence[bool], stale: Sequence[bool]) -> np.ndarray:
        """One tick at session time `t`: `x` = the cameras' scene features (rows in `camera_ids` order, float32,
        SCENE_FEATURES columns). Returns (n_cameras, len(TEMPORAL_FEATURES)) float32 in the same row order."""
        t = float(t)
        own_masks: dict[str, int] = {}
        can_hold: set[str] = set()
        for i, cam in enumerate(camera_ids):
            voiced = int(speech_masks[i]) or (_LAST_BIN if speaking[i] else 0)
            own = bool(voiced) and not stale[i] and float(x[i, _REL]) >= -OWN_SPEECH_DB
            own_masks[cam] = voiced if own else 0
            if may_take_floor(own, float(x[i, _PERSON]), float(x[i, _SPEECH]), FLOOR_MIN_SPEECH_PROB):
                can_hold.add(cam)
        self.talk.update(t, tick_s, own_masks, {}, can_hold)
        if any(float(x[i, _KEYWORD]) > 0 for i in range(len(camera_ids))):
            self.last_keyword_any = t
        runs = {cam: self.talk.utterance_s(cam, t) for cam in camera_ids}
        newly = []
        for cam in camera_ids:
            self.turns.add(t, tick_s, cam, own_masks[cam])
            if cam != self.settled and self.turns.length(cam, t) >= SETTLED_S - 1e-9:
                newly.append((self.turns.get(cam).start, cam))
        if newly:  # several at once: the one who began last
            self.settled, self.settled_since = max(newly)[1], t
        anyone = _since(t, self.talk.talk.last_speech())
        keyword_any = _since(t, self.last_keyword_any)
        out = np.empty((len(camera_ids), len(TEMPORAL_FEATURES)), np.float32)
        for i, cam in enumerate(camera_ids):
            motion, people = float(x[i, _MOTION]), float(x[i, _PEOPLE])
            share = bin(own_masks[cam]).count("1") / 8.0
            c = self.cameras.get(cam)
            if c is None:
                c = self.cameras[cam] = _Camera(t, None, share, motion, motion, motion, people)
            else:
                dt = max(0.0, t - c.t)
                c.t = t
                c.speech_share = _ema(c.speech_share, share, dt, TAU_S["speech_share_5s"])
                c.motion_2s = _ema(c.motion_2s, motion, dt, TAU_S["motion_mean_2s"])
                c.motion_fast = _ema(c.motion_fast, motion, dt, TAU_S["motion_fast"])
                c.motion_slow = _ema(c.motion_slow, motion, dt, TAU_S["motion_slow"])
                c.people_2s = _ema(c.people_2s, people, dt, TAU_S["people_mean_2s"])
            if float(x[i, _KEYWORD]) > 0:
                c.last_keyword = t
            if runs[cam] > 0:
                c.last_utterance = runs[cam]
            tk = self.talk.talk.get(cam)  # its utterances
            holder = self.talk.holder == cam
            values = {
                "speech_run_s": _seconds(runs[cam]),
                "since_spoke_s": _since(t, tk.last if tk is not None else None),
                "since_anyone_spoke_s": anyone,
                "since_keyword_s": _since(t, c.last_keyword),
                "since_keyword_any_s": keyword_any,
                "speech_share_5s": c.speech_share,
                "motion_mean_2s": c.motion_2s,
                "motion_trend": c.motion_fast - c.motion_slow,
                "people_mean_2s": c.people_2s,
                "floor_holder": 1.0 if holder else 0.0,
                "floor_s": _seconds(t - self.talk.holder_since) if holder else 0.0,
                "last_utterance_s": min(HORIZON_S, _seconds(c.last_utterance)),
                "settled_speaker": 1.0 if self.settled == cam else 0.0,
                "settled_s": _since(t, self.settled_since) if self.settled == cam else 0.0,
            }
            out[i] = [values[name] for name in TEMPORAL_FEATURES]
        return out


def temporal_columns(camera_ticks, tick_s: float | None = None):
    """The temporal features of logged-shape camera_ticks rows (a pandas frame of one or more sessions, with the
    scene features by name, `session_id`, `tick`, `t`, `camera_id`, and optionally `speech_mask`, `speaking`,
    `stale`), computed by one `TemporalState` per session in tick order. Returns a frame of TEMPORAL_FEATURES with
    the input's index. `tick_s` None = each session's median tick interval."""
    import pandas as pd

    df = camera_ticks
    n = len(df)
    out = np.full((n, len(TEMPORAL_FEATURES)), np.nan, np.float32)
    if n == 0:
        return pd.DataFrame(out, index=df.index, columns=list(TEMPORAL_FEATURES))
    x = np.column_stack([df[f].to_numpy(dtype=np.float32, na_value=np.nan) if f in df.columns
                         else np.full(n, np.nan, np.float32) for f in SCENE_FEATURES])
    masks = df["speech_mask"].to_numpy(dtype=np.int64) if "speech_mask" in df.columns else np.zeros(n, np.int64)
    speaking = df["speaking"].to_numpy(dtype=bool) if "speaking" in df.columns else np.zeros(n, bool)
    stale = df["stale"].to_numpy(dtype=bool) if "stale" in df.columns else np.zeros(n, bool)
    order = np.lexsort((df["camera_id"].astype(str).to_numpy(), df["tick"].to_numpy(),
                        df["session_id"].astype(str).to_numpy()))
    sessions = df["session_id"].astype(str).to_numpy()[order]
    ticks = df["tick"].to_numpy()[order]
    times = df["t"].to_numpy(dtype=np.float64)[order]
    cams = df["camera_id"].astype(str).to_numpy()[order]
    new_tick = np.r_[True, (sessions[1:] != sessions[:-1]) | (ticks[1:] != ticks[:-1])]
    starts = np.r_[np.flatnonzero(new_tick), n]
    if tick_s is None:
        steps = {s: float(np.median(np.diff(np.unique(g)))) if g.nunique() > 1 else 0.2
                 for s, g in pd.Series(times).groupby(sessions, sort=False)}
    state, session, step = None, None, 0.2
    for a, b in zip(starts[:-1], starts[1:]):
        if sessions[a] != session:
            session, state = sessions[a], TemporalState()
            step = steps[session] if tick_s is None else float(tick_s)
        rows = order[a:b]
        out[rows] = state.update(float(times[a]), step, cams[a:b].tolist(), x[rows], masks[rows], speaking[rows],
                                 stale[rows])
    return pd.DataFrame(out, index=df.index, columns=list(TEMPORAL_FEATURES))
