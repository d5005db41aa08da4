"""Offline evaluation of a ranker against the human director, on held-out sessions.

Two views, because "stay on the current camera" agrees with a human on ~98% of ticks and says nothing:

- at the human's CUT POINTS: is the ranker's best camera other than the one on program the camera the human cut
  to (`cut_top1`)? NDCG@1/@3 over those groups too;
- a REPLAY of every held-out session through the director core the runtime uses (ranker/core.py, same policy rules,
  same contexts, under the policy configuration production runs), compared with the human program: frame
  agreement, cut-time error, switches/min, ping-pong, and cuts inside the outgoing camera's own speech (the
  policy's speech wait timed out; from the logged speech timing, there are no word-level ground truths here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import RankingData, scene_part
from .metrics import Shot, disagreements, frame_agreement, ping_pong, shots_from_decisions
from .core import CameraTick, DirectorCore
from .policy import PolicyConfig


def cut_point_top1(scores: np.ndarray, data: RankingData) -> float:
    """Share of human cut points where the ranker's best camera, excluding the one on program, is the human's."""
    off = data.offsets
    hits, n = 0, 0
    for g in np.flatnonzero(data.cut_points):
        a, b = off[g], off[g + 1]
        cams, s = data.camera[a:b], scores[a:b].astype(np.float64).copy()
        s[cams == data.prev_human[g]] = -np.inf
        hits += cams[int(np.argmax(s))] == data.human[g]
        n += 1
    return hits / n if n else float("nan")


def ndcg_at(scores: np.ndarray, data: RankingData, k: int, cut_points_only: bool = True) -> float:
    """NDCG@k with one relevant camera per group (the human's)."""
    off = data.offsets
    groups = np.flatnonzero(data.cut_points) if cut_points_only else np.arange(data.n_groups)
    vals = []
    for g in groups:
        a, b = off[g], off[g + 1]
        order = np.argsort(-scores[a:b], kind="stable")
        rank = int(np.flatnonzero(data.y[a:b][order])[0]) + 1 if data.y[a:b].any() else None
        vals.append(1.0 / np.log2(rank + 1) if rank is not None and rank <= k else 0.0)
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class ReplayResult:
    frame_agreement: float
    cut_time_error_s: float  # mean |replay cut - human cut| over human cuts matched within match_window_s
    cut_recall: float  # human cuts matched by a replay cut into the same camera
    switches_per_min: float
    human_switches_per_min: float
    ping_pong: int
    cuts_in_speech: int
    sessions: int
    human_ping_pong: int = 0  # the human program's own quick returns (A -> B -> A), on the same sessions
    # per session: agreement, switches/min of the replay and of the human, ping-pong, cuts inside speech (worst first
    # is `sorted(per_session, key=lambda r: r["agreement"])`)
    per_session: list = field(default_factory=list)
    # every span where the replay shows another camera than the human (ranker.metrics.disagreements, with `session`)
    disagreements: list = field(default_factory=list)


def _human_shots(data: RankingData, idx: np.ndarray, end: float) -> list[Shot]:
    shots: list[Shot] = []
    for g in idx:
        if not shots or data.human[g] != shots[-1].camera:
            if shots:
                shots[-1] = Shot(shots[-1].camera, shots[-1].start, data.t[g])
            shots.append(Shot(data.human[g], data.t[g], end))
    return shots


def _pairs(spans) -> tuple[tuple[float, float], ...]:
    """A logged flat [start0, end0, start1, end1, ...] as (start, end) pairs."""
    spans = list(spans) if spans is not None else []
    return tuple(zip(spans[0::2], spans[1::2]))


class Replayer:
    """Replays of one RankingData's sessions through the director core (`run`: one ranker's scores under one policy
    configuration). The per-tick camera inputs are rebuilt from the rows for every replay, or, with `cache`, built
    once and kept: tuning replays the same sessions under many rankers and timings (ranker/train.py)."""

    def __init__(self, data: RankingData, tick_s: float = 0.2, cache: bool = False):
        self.data, self.tick_s, self.cache = data, float(tick_s), cache
        self._quiet = np.where(np.isnan(data.quiet_at), None, data.quiet_at).tolist() if len(data.quiet_at) else []
        self._ticks: dict[str, list[list[CameraTick]]] = {}

    def _session_ticks(self, idx: np.ndarray) -> list[list[CameraTick]]:
        data, off, quiet = self.data, self.data.offsets, self._quiet
        return [[CameraTick(str(data.camera[i]), scene_part(data.X[i]), speaking=bool(data.speaking[i]),
                            speech_mask=int(data.speech_mask[i]), safe_cut_wait_s=float(data.safe_cut_wait_s[i]),
                            quiet_at=quiet[i], stale=bool(data.stale[i]), words=_pairs(data.word_spans[i]))
                 for i in range(off[g], off[g + 1])] for g in idx]

    def run(self, scores: np.ndarray, config: PolicyConfig | None = None,
            match_window_s: float = 5.0) -> "ReplayResult":
        data, tick_s, off = self.data, self.tick_s, self.data.offsets
        agree, errors, matched, total_h, sw, hsw, pp, hpp, in_speech, minutes = [], [], 0, 0, 0, 0, 0, 0, 0, 0.0
        per_session, spans = [], []
        sessions = data.sessions()
        for sess in sessions:
            idx = np.flatnonzero(data.session == sess)
            ticks = self._ticks.get(sess)
            if ticks is None:
                ticks = self._session_ticks(idx)
                if self.cache:
                    self._ticks[sess] = ticks
            core = DirectorCore(sess, policy=config, tick_s=tick_s, explain=False, model_policy=False,
                                features=False)
            decisions, speech_before = [], in_speech
            for g, cams in zip(idx, ticks):
                r = core.tick(float(data.t[g]), cams, scores=scores[off[g]:off[g + 1]])
                in_speech += r.cut_inside_speech
                decisions.append(r.decision)
            start, end = float(data.t[idx[0]]), float(data.t[idx[-1]]) + tick_s
            shots = shots_from_decisions(decisions, end)
            human = _human_shots(data, idx, end)
            agree.append(frame_agreement(shots, human, start, end, tick_s))
            dur = end - start
            minutes += dur / 60
            cuts, human_cuts, returns = max(0, len(shots) - 1), max(0, len(human) - 1), ping_pong(shots)
            sw += cuts
            hsw += human_cuts
            pp += returns
            hpp += ping_pong(human)
            per_session.append({"session": sess, "agreement": agree[-1], "seconds": round(dur, 3),
                                "switches_per_min": cuts / (dur / 60) if dur else 0.0,
                                "human_switches_per_min": human_cuts / (dur / 60) if dur else 0.0,
                                "ping_pong": returns, "cuts_in_speech": in_speech - speech_before})
            spans.extend({"session": sess, **d} for d in disagreements(shots, human, start, end, tick_s))
            replay_cuts = [(s.start, s.camera) for s in shots[1:]]
            for h in human[1:]:
                total_h += 1
                near = [abs(t - h.start) for t, c in replay_cuts
                        if c == h.camera and abs(t - h.start) <= match_window_s]
                if near:
                    matched += 1
                    errors.append(min(near))
        return ReplayResult(
            frame_agreement=float(np.mean(agree)) if agree else float("nan"),
            cut_time_error_s=float(np.mean(errors)) if errors else float("nan"),
            cut_recall=matched / total_h if total_h else float("nan"),
            switches_per_min=sw / minutes if minutes else 0.0,
            human_switches_per_min=hsw / minutes if minutes else 0.0,
            ping_pong=pp, cuts_in_speech=in_speech, sessions=len(sessions), human_ping_pong=hpp,
            per_session=per_session, disagreements=spans)


def replay(scores: np.ndarray, data: RankingData, config: PolicyConfig | None = None, tick_s: float = 0.2,
           match_window_s: float = 5.0) -> ReplayResult:
    """Every session of `data` replayed through the director core with `scores` (one per row) under `config`,
    compared with the human program (`Replayer` keeps the camera inputs for repeated replays)."""
    return Replayer(data, tick_s).run(scores, config, match_window_s)


def intent_scores(data: RankingData, intents: dict) -> np.ndarray:
    """Scores of a scene oracle on simulated sessions: 1 for the camera the hidden director wants at the tick (its
    intent before its reaction lag and minimum hold, `ranker.simulate.simulate(..., intents=...)`), 0 elsewhere.
    Replayed, it is a reference for any ranker on those sessions, not a bound: it knows the scene as the director
    judges it, only not the director's pace, and the policy's own rules still shape its program. KeyError names a
    session without an intent."""
    missing = sorted(set(data.sessions()) - set(intents))
    if missing:
        raise KeyError(f"no director intent for session(s) {missing[:3]}: only simulated sessions have one")
    wanted = np.array([intents[s][int(k)] for s, k in zip(data.session, data.tick)], dtype=object)
    return (data.camera == np.repeat(wanted, data.group_sizes)).astype(np.float64)


def evaluate(ranker, data: RankingData, policy: PolicyConfig | None = None, tick_s: float = 0.2) -> dict:
    """Every metric for one ranker on held-out data, as a flat dict (MLflow- and Dagster-friendly). `policy` and
    `tick_s` should be what production runs (settings.policy, 1 / settings.tick_hz)."""
    scores = np.asarray(ranker.score(data.X), dtype=np.float64)
    r = replay(scores, data, policy, tick_s)
    return {
        "cut_top1": cut_point_top1(scores, data),
        "ndcg1_cut": ndcg_at(scores, data, 1),
        "ndcg3_cut": ndcg_at(scores, data, 3),
        "ndcg1_all": ndcg_at(scores, data, 1, cut_points_only=False),
        "replay_frame_agreement": r.frame_agreement,
        "replay_cut_time_error_s": r.cut_time_error_s,
        "replay_cut_recall": r.cut_recall,
        "replay_switches_per_min": r.switches_per_min,
        "human_switches_per_min": r.human_switches_per_min,
        "replay_ping_pong": r.ping_pong,
        "human_ping_pong": r.human_ping_pong,
        "replay_cuts_in_speech": r.cuts_in_speech,
        "cut_points": int(data.cut_points.sum()),
        "groups": int(data.n_groups),
        "sessions": r.sessions,
    }


def evaluate_real(ranker, sessions, policy: PolicyConfig | None = None) -> dict:
    """A ranker on the real-media evaluation set (runtime/realset.py: sessions of the real analysis of recorded
    conversations with ground truth): each session's logged rows re-scored by `ranker` and replayed through the
    director core under `policy` (with `ranker.policy`'s learned timing, as production applies it), the program
    scored against the truth. Recorded media are directed as `aiobs direct` directs them: with the files lookahead
    when the policy has none. Returns the mean speaker follow, the total of mid-word and backchannel cuts, the mean
    switches per minute and the per-session figures."""
    from dataclasses import replace as _replace

    from .metrics import summary
    from .policy import FILES_LOOKAHEAD_S

    policy = (policy or PolicyConfig()).with_tuned(getattr(ranker, "policy", None))
    if policy.lookahead_s <= 0:
        policy = _replace(policy, lookahead_s=FILES_LOOKAHEAD_S)
    per = {}
    for s in sessions:
        shots = shots_from_decisions(real_program(ranker, s, policy), s.duration_s)
        per[s.name] = summary(shots, s.duration_s, s.lines, policy.audio_lead_s)
    follow = [m["speaker_follow"] for m in per.values() if m["speaker_follow"] is not None]
    return {"real_speaker_follow": float(np.mean(follow)) if follow else float("nan"),
            "real_mid_word_cuts": int(sum(m["mid_word_cuts"] or 0 for m in per.values())),
            "real_backchannel_cuts": int(sum(m["backchannel_cuts"] or 0 for m in per.values())),
            "real_switches_per_min": float(np.mean([m["switches_per_min"] for m in per.values()])) if per else 0.0,
            "real_sessions": len(per), "real_per_session": per}


def real_program(ranker, session, policy: PolicyConfig) -> list:
    """The decisions of the director core directing a real-media session (runtime/realset.py `RealSession`: its
    logged rows) with `ranker` under `policy` as given, tick by tick as `aiobs direct` would. The session's rows are
    scored at once: the temporal context the core adds to them depends on the scene alone, never on the ranker or
    the policy, so the session keeps it (`ranker_rows`) for every ranker and timing the gate and the tuning try."""
    rows = session.ranker_rows
    scores = np.asarray(ranker.score(np.concatenate(rows)), dtype=np.float64).reshape(-1) if rows else np.zeros(0)
    bounds = np.cumsum([0] + [len(r) for r in rows])
    core = DirectorCore(session.name, policy=policy, tick_s=session.tick_s, explain=False, model_policy=False,
                        features=False)
    return [core.tick(t, cams, scores=scores[a:b]).decision for (t, cams), a, b in zip(session.ticks, bounds, bounds[1:])]


def plots(booster, ranker, data: RankingData, out_dir) -> dict[str, str]:
    """Feature importance, per-camera confusion at cut points, score calibration -> PNG paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    gain = booster.get_score(importance_type="gain")
    items = sorted(gain.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4a7ab5")
    ax.set_title("feature importance (gain)")
    paths["feature_importance"] = str(out / "feature_importance.png")
    fig.savefig(paths["feature_importance"], bbox_inches="tight", dpi=80)
    plt.close(fig)

    scores = np.asarray(ranker.score(data.X), dtype=np.float64)
    cams = sorted(set(data.camera.tolist()))
    conf = np.zeros((len(cams), len(cams)), int)
    off = data.offsets
    for g in np.flatnonzero(data.cut_points):
        a, b = off[g], off[g + 1]
        s = scores[a:b].copy()
        s[data.camera[a:b] == data.prev_human[g]] = -np.inf
        conf[cams.index(data.human[g]), cams.index(data.camera[a:b][int(np.argmax(s))])] += 1
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(cams)), cams)
    ax.set_yticks(range(len(cams)), cams)
    ax.set_xlabel("ranker's pick at the cut")
    ax.set_ylabel("human's pick")
    for i in range(len(cams)):
        for j in range(len(cams)):
            ax.text(j, i, conf[i, j], ha="center", va="center", fontsize=8)
    paths["cut_confusion"] = str(out / "cut_confusion.png")
    fig.savefig(paths["cut_confusion"], bbox_inches="tight", dpi=80)
    plt.close(fig)

    # calibration: within-tick score rank vs how often the human picked it
    order = np.zeros(len(scores), int)
    for g in range(data.n_groups):
        a, b = off[g], off[g + 1]
        order[a:b] = np.argsort(np.argsort(-scores[a:b]))
    ranks = np.arange(order.max() + 1) if len(order) else np.arange(0)
    rates = [float(data.y[order == r].mean()) if (order == r).any() else 0.0 for r in ranks]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(ranks + 1, rates, color="#c97b2a")
    ax.set_xlabel("camera's score rank within the tick")
    ax.set_ylabel("share chosen by the human")
    paths["score_calibration"] = str(out / "score_calibration.png")
    fig.savefig(paths["score_calibration"], bbox_inches="tight", dpi=80)
    plt.close(fig)
    return paths
