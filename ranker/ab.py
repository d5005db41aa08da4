"""A/B from live evidence: how each arm (champion, challenger) directed with real operators watching.

`session_outcomes` turns a window of the feature log (decisions, overrides, camera_ticks) into one row per session and
arm (a session directed in alternating time blocks has a row for each arm): minutes on air, operator overrides, cuts,
ping-pong, mid-word cuts, and the air time operators overruled. `compare` estimates each arm's rate of every metric
(ratio of sums over sessions) and the challenger's difference from the champion with a bootstrap by session
(sessions resampled within each arm), applies the minimum-sample rule, and says whether the challenger should be
promoted: only when the primary metric (operator overrides per minute: every override is the director disagreeing
with a human) improves beyond its interval and no guardrail metric is worse beyond its interval. `rollback_needed`
compares a champion's override rate since its promotion with its predecessor's before it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .metrics import ping_pong, shots_from_decisions

# metric -> (numerator column, denominator column, scale, "lower" or "higher" is better, what it is)
METRICS: dict[str, tuple[str, str, float, str, str]] = {
    "overrides_per_min": ("overrides", "minutes", 1.0, "lower", "operator overrides per minute (the primary metric)"),
    "overruled_share": ("overruled_s", "minutes", 60.0, "lower", "share of air time the operators overruled (from "
                        "the replaced shot's start, at most 10 s, to the override); 1 - agreement with operators"),
    "switches_per_min": ("cuts", "minutes", 1.0, "lower", "cuts per minute"),
    "ping_pong_per_min": ("ping_pong", "minutes", 1.0, "lower", "returns to the camera just left, per minute"),
    "mid_word_per_min": ("mid_word", "minutes", 1.0, "lower", "cuts at the tick while the outgoing camera spoke, "
                         "per minute"),
    "reaction_s": ("reaction_s", "reactions", 1.0, "lower", "mean time from a speaker's onset to the automatic cut "
                   "to them"),
    "tick_latency_ms": ("latency_ms", "latency_ticks", 1.0, "lower", "mean time from a tick's start to its "
                        "decision (analysis included where the front door measures it)"),
}
PRIMARY = "overrides_per_min"
OVERRULED_CAP_S = 10.0
ONSET_CAP_TICKS = 50  # a speech run longer than this (10 s at 5 Hz) before the cut is a return, not a reaction


def session_outcomes(decisions: pd.DataFrame, overrides: pd.DataFrame | None = None,
                     camera_ticks: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (session, arm): session_id, variant, model_version, minutes, overrides, overruled_s, cuts,
    ping_pong, mid_word. `camera_ticks` (session_id, tick, camera_id, speaking) is needed for mid_word only."""
    cols = ["session_id", "variant", "model_version", "start_ts", "minutes", "overrides", "overruled_s", "cuts",
            "ping_pong", "mid_word", "reaction_s", "reactions", "latency_ms", "latency_ticks"]
    if decisions is None or not len(decisions):
        return pd.DataFrame(columns=cols)
    speaking = set()
    if camera_ticks is not None and len(camera_ticks):
        sp = camera_ticks[camera_ticks["speaking"].astype(bool)]
        speaking = set(zip(sp["session_id"].astype(str), sp["tick"].astype(int), sp["camera_id"].astype(str)))

    def onset(sid: str, cam: str, k: int) -> int | None:
        """The first tick of `cam`'s speech run around tick k (gaps up to 2 ticks bridged); None = not speaking."""
        if not any((sid, j, cam) in speaking for j in (k - 1, k, k + 1)):
            return None
        j = k + 1 if (sid, k + 1, cam) in speaking and (sid, k, cam) not in speaking else k
        while k - j < ONSET_CAP_TICKS and any((sid, j - g, cam) in speaking for g in (1, 2, 3)):
            j -= next(g for g in (1, 2, 3) if (sid, j - g, cam) in speaking)
        return j if k - j < ONSET_CAP_TICKS else None  # talking for long: a return to them, not a reaction
    ovs = overrides if overrides is not None else pd.DataFrame(columns=["session_id", "tick", "t"])
    rows = []
    for sid, d in decisions.groupby("session_id", sort=True):
        d = d.sort_values("tick")
        t = d["t"].to_numpy(float)
        tick_s = float(np.median(np.diff(t))) if len(t) > 1 else 0.2
        variant = d["ab_variant"].astype(str).to_numpy()
        by_tick = dict(zip(d["tick"].astype(int), variant))
        cuts = d[d["cut"].astype(bool)]
        shots = shots_from_decisions([SimpleNamespace(cut=True, t=float(r.t),
                                                      cut_time=float(r.t if pd.isna(r.cut_at) else r.cut_at),
                                                      to_camera=str(r.to_camera), reason=str(r.reason),
                                                      transition=str(r.transition or "cut"))
                                      for r in cuts.itertuples(index=False)], float(t[-1]) + tick_s)
        per: dict[str, dict] = {}

        def acc(v: str) -> dict:
            return per.setdefault(v, {"start_ts": np.inf, "minutes": 0.0, "overrides": 0, "overruled_s": 0.0,
                                      "cuts": 0, "ping_pong": 0, "mid_word": 0, "reaction_s": 0.0, "reactions": 0,
                                      "latency_ms": 0.0, "latency_ticks": 0, "versions": Counter()})

        for v, n in zip(*np.unique(variant, return_counts=True)):
            acc(v)["minutes"] += n * tick_s / 60.0
        for v, mv in zip(variant, d["model_version"].astype(str)):
            acc(v)["versions"][mv] += 1
        if "ts" in d:
            secs = d["ts"].map(lambda x: x.timestamp() if hasattr(x, "timestamp") else float(x)).to_numpy(float)
            for v in set(variant):
                acc(v)["start_ts"] = float(secs[variant == v].min())
        if "latency_ms" in d:
            lat = d[d["latency_ms"].notna()]
            for v, g in lat.groupby("ab_variant"):
                acc(str(v))["latency_ms"] += float(g["latency_ms"].sum())
                acc(str(v))["latency_ticks"] += len(g)
        tick_t = dict(zip(d["tick"].astype(int), t))
        # the director's own cuts: an operator's take is the operator's, counted as an override, not a switch
        own = d[d["cut"].astype(bool) & (d["reason"] != "start") & ~d["reason"].astype(str).str.startswith("override")]
        for r in own.itertuples(index=False):
            a = acc(str(r.ab_variant))
            a["cuts"] += 1
            inside = getattr(r, "cut_inside_speech", None)  # the core's own judgement (own speech, word times)
            if (bool(inside) if inside is not None and not pd.isna(inside)
                    else pd.isna(r.cut_at) and (str(sid), int(r.tick), str(r.from_camera)) in speaking):
                a["mid_word"] += 1
            j = onset(str(sid), str(r.to_camera), int(r.tick))  # how long it took to follow a new speaker
            if j is not None and j in tick_t:
                a["reaction_s"] += max(0.0, float(r.t if pd.isna(r.cut_at) else r.cut_at) - tick_t[j])
                a["reactions"] += 1
        for i in range(2, len(shots)):  # a return to the camera just left, charged to the arm that made it
            if any(sh.reason.startswith("override") for sh in shots[i - 1:i + 1]):
                continue  # an operator's take, or the director's return after one: not the director's ping-pong
            if ping_pong(shots[i - 2:i + 1]):
                tick = int(d["tick"].iloc[min(len(d) - 1, int(np.searchsorted(t, shots[i].start - 1e-9)))])
                acc(by_tick.get(tick, variant[-1]))["ping_pong"] += 1
        mine = ovs[ovs["session_id"] == sid]
        if "action" in mine:
            mine = mine[mine["action"].astype(str).isin(["take", "lock"])]  # a release hands back; not a correction
        for o in mine.itertuples(index=False):
            v = by_tick.get(int(o.tick), variant[-1])
            a = acc(v)
            a["overrides"] += 1
            start = max((s.start for s in shots if s.start <= float(o.t) - 1e-9), default=float(o.t))
            a["overruled_s"] += min(OVERRULED_CAP_S, float(o.t) - start)
        for v, a in per.items():  # (a hot swap mid-session: the version that directed most of it)
            rows.append({"session_id": str(sid), "variant": v, "model_version": a.pop("versions").most_common(1)[0][0],
                         **a})
    return pd.DataFrame(rows, columns=cols)


@dataclass
class MetricResult:
    name: str
    better: str
    champion: float
    challenger: float
    champion_ci: tuple[float, float]
    challenger_ci: tuple[float, float]
    diff: float  # challenger - champion
    diff_ci: tuple[float, float]

    @property
    def significantly_better(self) -> bool:
        lo, hi = self.diff_ci
        return hi < 0 if self.better == "lower" else lo > 0

    @property
    def significantly_worse(self) -> bool:
        return self.worse_beyond(0.0)

    def worse_beyond(self, tolerance: float) -> bool:
        """Worse beyond its interval by more than `tolerance` of the champion's value (0.1 = 10 %): a guardrail
        guards against harm that matters, not against a measurably different 0.46 vs 0.49 ms."""
        lo, hi = self.diff_ci
        margin = tolerance * abs(self.champion)
        return lo > margin if self.better == "lower" else hi < -margin


@dataclass
class ABReport:
    champion: str  # the arms' names as logged
    challenger: str
    sessions: dict[str, int]
    minutes: dict[str, float]
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    enough: bool = False
    recommendation: str = "keep"  # promote | keep | wait
    reason: str = ""

    def as_dict(self) -> dict:
        return {"champion": self.champion, "challenger": self.challenger, "sessions": self.sessions,
                "minutes": {k: round(v, 2) for k, v in self.minutes.items()}, "enough": self.enough,
                "recommendation": self.recommendation, "reason": self.reason,
                "metrics": {k: {"better": m.better, "champion": m.champion, "challenger": m.challenger,
                                "champion_ci": list(m.champion_ci), "challenger_ci": list(m.challenger_ci),
                                "diff": m.diff, "diff_ci": list(m.diff_ci)} for k, m in self.metrics.items()}}

    def table(self) -> str:
        head = f"| metric | better | {self.champion} | {self.challenger} | difference (95% CI) |\n|---|---|---|---|---|\n"
        return head + "".join(
            f"| {k} | {m.better} | {m.champion:.3f} [{m.champion_ci[0]:.3f}, {m.champion_ci[1]:.3f}] | "
            f"{m.challenger:.3f} [{m.challenger_ci[0]:.3f}, {m.challenger_ci[1]:.3f}] | {m.diff:+.3f} "
            f"[{m.diff_ci[0]:+.3f}, {m.diff_ci[1]:+.3f}] |\n" for k, m in self.metrics.items())


def _rate(df: pd.DataFrame, name: str) -> float:
    num, den, scale = METRICS[name][:3]
    d = float(df[den].sum()) * scale
    return float(df[num].sum()) / d if d > 0 else float("nan")


def _boot(df: pd.DataFrame, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, len(METRICS)) bootstrap values of every metric: sessions resampled with replacement."""
    idx = rng.integers(0, len(df), size=(n, len(df)))
    out = np.empty((n, len(METRICS)))
    for j, (num, den, scale, _, _) in enumerate(METRICS.values()):
        d = df[den].to_numpy(float)[idx].sum(axis=1) * scale
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(d > 0, df[num].to_numpy(float)[idx].sum(axis=1) / np.where(d > 0, d, 1), np.nan)
    return out


def compare(outcomes: pd.DataFrame, champion: str = "champion", challenger: str = "challenger", *,
            n_boot: int = 2000, seed: int = 0, min_sessions: int = 5, min_minutes: float = 10.0,
            guardrail_tolerance: float = 0.10,
            alpha: float = 0.05) -> ABReport:
    missing = {c for spec in METRICS.values() for c in spec[:2]} - set(outcomes.columns)
    outcomes = outcomes.assign(**{c: 0.0 for c in missing})  # a metric with no evidence is left out below
    arms = {a: outcomes[outcomes["variant"] == a].groupby("session_id").sum(numeric_only=True).reset_index()
            for a in (champion, challenger)}
    report = ABReport(champion, challenger, {a: len(df) for a, df in arms.items()},
                      {a: float(df["minutes"].sum()) for a, df in arms.items()})
    short = [f"{a}: {report.sessions[a]} sessions / {report.minutes[a]:.1f} min" for a in arms
             if report.sessions[a] < min_sessions or report.minutes[a] < min_minutes]
    if any(report.sessions[a] == 0 for a in arms):
        report.recommendation, report.reason = "wait", "an arm has no sessions yet (" + "; ".join(short) + ")"
        return report
    rng = np.random.default_rng(seed)
    boot = {a: _boot(df, n_boot, rng) for a, df in arms.items()}
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    for j, (name, (_, den, _, better, _)) in enumerate(METRICS.items()):
        if not (arms[champion][den].sum() > 0 and arms[challenger][den].sum() > 0):
            continue  # nothing to measure it on (e.g. no front door logged latency)
        a, b = boot[champion][:, j], boot[challenger][:, j]

        def ci(x):
            return tuple(float(v) for v in np.nanpercentile(x, q))

        champ, chal = _rate(arms[champion], name), _rate(arms[challenger], name)
        report.metrics[name] = MetricResult(name, better, champ, chal, ci(a), ci(b), chal - champ, ci(b - a))
    report.enough = not short
    if PRIMARY not in report.metrics:
        report.recommendation, report.reason = "wait", "no minutes on air in an arm"
        return report
    primary = report.metrics[PRIMARY]
    worse = [k for k, m in report.metrics.items() if k != PRIMARY and m.worse_beyond(guardrail_tolerance)]
    if not report.enough:
        report.recommendation = "wait"
        report.reason = "not enough evidence yet (minimum " + f"{min_sessions} sessions and {min_minutes:g} min per " \
                        "arm): " + "; ".join(short)
    elif worse:
        report.recommendation = "keep"
        report.reason = "guardrail(s) worse beyond their interval: " + ", ".join(
            f"{k} {report.metrics[k].diff:+.3f} [{report.metrics[k].diff_ci[0]:+.3f}, "
            f"{report.metrics[k].diff_ci[1]:+.3f}]" for k in worse)
    elif primary.significantly_better:
        report.recommendation = "promote"
        report.reason = (f"{PRIMARY} {primary.champion:.3f} -> {primary.challenger:.3f} ({primary.diff:+.3f}, 95% CI "
                         f"[{primary.diff_ci[0]:+.3f}, {primary.diff_ci[1]:+.3f}]); no guardrail worse")
    else:
        report.recommendation = "keep"
        report.reason = (f"{PRIMARY} difference {primary.diff:+.3f}, 95% CI [{primary.diff_ci[0]:+.3f}, "
                         f"{primary.diff_ci[1]:+.3f}]: not better beyond its interval")
    return report


def rollback_needed(before: pd.DataFrame, after: pd.DataFrame, *, max_rise: float = 0.25, n_boot: int = 2000,
                    seed: int = 0, min_sessions: int = 5, min_minutes: float = 10.0) -> tuple[bool, str]:
    """A champion whose override rate since its promotion (`after`: its sessions) rose more than `max_rise` (0.25 =
    25 %) above its predecessor's (`before`), with the rise beyond the bootstrap interval, is to be rolled back."""
    rep = compare(pd.concat([before.assign(variant="before"), after.assign(variant="after")]), "before", "after",
                  n_boot=n_boot, seed=seed, min_sessions=min_sessions, min_minutes=min_minutes)
    if not rep.enough:
        return False, rep.reason
    m = rep.metrics[PRIMARY]
    if m.diff_ci[0] > 0 and m.challenger > m.champion * (1 + max_rise):
        return True, (f"live override rate rose from {m.champion:.3f} to {m.challenger:.3f}/min since promotion "
                      f"(+{m.challenger / max(1e-9, m.champion) - 1:.0%}, 95% CI of the rise [{m.diff_ci[0]:+.3f}, "
                      f"{m.diff_ci[1]:+.3f}]), more than the allowed {max_rise:.0%}")
    return False, (f"override rate {m.champion:.3f} -> {m.challenger:.3f}/min since promotion: within the allowed "
                   f"{max_rise:.0%} rise")


def plot(report: ABReport, path) -> str:
    """Each metric's rate per arm with its 95% interval, one panel per metric; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.metrics)
    cols = min(4, max(1, len(names)))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        m = report.metrics[name]
        vals = [m.champion, m.challenger]
        errs = np.array([[v - lo, hi - v] for v, (lo, hi) in zip(vals, (m.champion_ci, m.challenger_ci))]).T
        ax.bar([report.champion, report.challenger], vals, yerr=np.maximum(errs, 0), capsize=6,
               color=["#4a7ab5", "#d9822b"])
        ax.set_title(f"{name}\n({m.better} is better)", fontsize=9)
    sessions = ", ".join(f"{k} {v} sessions" for k, v in report.sessions.items())
    fig.suptitle(f"A/B: {report.recommendation} ({sessions}); bars: 95% intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


@dataclass
class ABConfig:
    min_sessions: int = 5  # per arm, before anything is recommended
    min_minutes: float = 10.0  # per arm
    n_boot: int = 2000
    auto_promote: bool = False  # off = recommend only
    rollback_rise: float = 0.25  # a champion's live override rate this much above its predecessor's: roll back
    auto_rollback: bool = True
    guardrail_tolerance: float = 0.10  # a guardrail blocks when worse beyond its interval by > 10 % of the champion


def read_window(store, start: float | None = None, end: float | None = None) -> dict[str, pd.DataFrame]:
    """The live evidence of a time window: decisions, overrides and the speaking flags of camera_ticks (rows the
    simulator wrote as a hidden human's, variant 'human', are not A/B evidence)."""
    window = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    d = store.frame("decisions", columns=["session_id", "tick", "t", "program_camera", "cut", "from_camera",
                                          "to_camera", "reason", "cut_at", "transition", "model_version",
                                          "ab_variant", "latency_ms", "cut_inside_speech", "ts"], **window)
    d = d[~d["ab_variant"].isin(["human", ""])]
    sessions = sorted(set(d["session_id"].astype(str)))
    o = store.frame("overrides", columns=["session_id", "tick", "t", "camera_id", "action"], **window)
    ct = store.frame("camera_ticks", columns=["session_id", "tick", "camera_id", "speaking"], **window)
    return {"decisions": d, "overrides": o[o["session_id"].isin(sessions)],
            "camera_ticks": ct[ct["session_id"].isin(sessions) & ct["speaking"].astype(bool)]}


def evaluate_live(store, tracking_uri: str, cfg: ABConfig, start: float | None = None, end: float | None = None,
                  who: str = "ab_report") -> dict:
    """Read the window, compare the arms, and act behind the guardrails. Only evidence of the versions the aliases
    name now counts (a retrain may have moved the challenger inside the window). First the rollback check: a
    champion whose live override rate since the move that made it champion rose beyond `rollback_rise` above the
    version it replaced (that version's sessions before the move are the reference) is rolled back. Then the
    challenger is promoted when the report says so and `auto_promote` is on, unless it is the champion already or
    was once rolled back. Every move goes through the registry (audited, with the reason, on the MLflow versions)."""
    from .registry import (CHALLENGER, CHAMPION, MODEL_NAME, _last_move_to, audit_trail, promote, registry_client,
                           rollback)

    frames = read_window(store, start, end)
    outcomes = session_outcomes(frames["decisions"], frames["overrides"], frames["camera_ticks"])
    client = registry_client(tracking_uri)
    aliases = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            aliases[alias] = str(client.get_model_version_by_alias(MODEL_NAME, alias).version)
        except Exception:  # noqa: BLE001 - no such alias
            aliases[alias] = None
    out: dict = {"outcomes": outcomes, "actions": [], "aliases": aliases}
    label = {a: f"{MODEL_NAME}/{v}" for a, v in aliases.items() if v}
    current = aliases[CHAMPION]
    if current is not None:
        mv = client.get_model_version(MODEL_NAME, current)
        trail = audit_trail(mv)
        latest = next((e for e in reversed(trail) if str(e.get("to")) == current and e.get("from") != current), None)
        move = _last_move_to(trail, current)
        if latest is not None and (latest.get("undoes") or latest.get("action") == "rollback"):
            out["rollback_check"] = f"v{current} is champion again after a rollback: not checked"
        elif move is not None and move.get("from"):
            since = pd.Timestamp(move["when"]).timestamp()
            champ = outcomes[outcomes["variant"] == CHAMPION]
            after = champ[(champ["model_version"] == label[CHAMPION]) & (champ["start_ts"] >= since)]
            before = champ[(champ["model_version"] == f"{MODEL_NAME}/{move['from']}") & (champ["start_ts"] < since)]
            if len(before) and len(after):
                needed, why = rollback_needed(before, after, max_rise=cfg.rollback_rise, n_boot=cfg.n_boot,
                                              min_sessions=cfg.min_sessions, min_minutes=cfg.min_minutes)
                out["rollback_check"] = why
                if needed and cfg.auto_rollback:
                    change = rollback(tracking_uri, f"A/B guardrail: {why}", who=who)
                    out["actions"].append(f"rolled back champion v{current} -> v{change.to_version}: {why}")
                    out["report"] = ABReport(CHAMPION, CHALLENGER, {}, {}, recommendation="wait",
                                             reason=f"rolled back: {why}")
                    return out  # the arms' evidence no longer describes the registry: the next report judges afresh
    evidence = outcomes[((outcomes["variant"] == CHAMPION) & (outcomes["model_version"] == label.get(CHAMPION)))
                        | ((outcomes["variant"] == CHALLENGER) & (outcomes["model_version"] == label.get(CHALLENGER)))]
    report = compare(evidence, CHAMPION, CHALLENGER, n_boot=cfg.n_boot, min_sessions=cfg.min_sessions,
                     guardrail_tolerance=cfg.guardrail_tolerance,
                     min_minutes=cfg.min_minutes)
    out["report"] = report
    challenger = aliases[CHALLENGER]
    if challenger is None or challenger == current:
        report.recommendation = "wait"
        report.reason = "champion and challenger are the same version: nothing to compare" if challenger else \
            "no challenger in the registry"
        return out
    out["challenger_version"] = challenger
    if report.recommendation != "promote":
        return out
    undone = [e for v in (challenger,) for e in audit_trail(client.get_model_version(MODEL_NAME, v))
              if e.get("action") == "rollback" and str(e.get("from")) == v]
    if undone:
        report.recommendation = "keep"
        report.reason += f"; but v{challenger} was rolled back before ({undone[-1].get('why')}): promote it by hand"
    elif not cfg.auto_promote:
        out["actions"].append(f"recommend promoting v{challenger} (auto_promote is off): {report.reason}")
    elif str(client.get_model_version_by_alias(MODEL_NAME, CHALLENGER).version) != challenger:
        out["actions"].append(f"the challenger moved while the report ran: v{challenger} not promoted")
    else:
        change = promote(tracking_uri, challenger, f"A/B: {report.reason}", who=who)
        out["actions"].append(f"promoted v{change.to_version} over v{change.from_version}: {report.reason}")
    return out
