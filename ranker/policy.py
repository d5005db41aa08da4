"""The switching policy: one pure, deterministic object that turns per-tick camera scores into cuts.

The same code runs live, on files (`aiobs direct`) and in offline replay evaluation, so a rule is written once.
It holds no clock and does no I/O: everything it knows arrives in `step()`. Rules, in the order they are checked:

1. manual override: `take` cuts now; `lock` cuts and holds until `release` or its auto-resume timeout;
2. start: the first tick cuts to the best camera;
3. program lost: the program camera went stale -> cut to the best live camera now (no hold, no speech wait);
4. what auto-direction wants: the wide shot when nothing scores above `wide_threshold` (if a wide camera is set);
   a cutaway when the shot is older than `max_shot_s`; else the best other camera when it beats the program by
   at least `delta`. Ping-pong suppression: the camera just left is not eligible for `pingpong_window_s`;
   A delta cut also needs the same camera to lead for `dwell_s` (a debounce against one-tick blips);
5. minimum hold: no auto cut before the shot is `min_hold_s` old;
6. cooldown: no auto cut within `cooldown_s` of the previous auto cut;
7. speech-aware timing: while the program camera's speaker is mid-word, the cut waits for the next word/VAD
   boundary, at most `speech_wait_max_s`.

Every `Decision` names the rule that decided (`reason`) and the numbers behind it (`detail`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

REASONS = ("start", "override_take", "override_lock", "override_release", "override_rejected", "locked",
           "lock_timeout", "program_lost", "wide_fallback", "max_shot", "delta", "hold", "dwell", "min_hold",
           "cooldown", "speech_wait")


@dataclass(frozen=True)
class PolicyConfig:
    min_hold_s: float = 2.0
    cooldown_s: float = 4.0
    delta: float = 0.15
    dwell_s: float = 0.6  # the same camera must lead by `delta` this long before an auto cut (debounce)
    pingpong_window_s: float = 8.0
    speech_wait_max_s: float = 1.5
    wide_camera: str | None = None
    wide_threshold: float = 0.2
    max_shot_s: float = 30.0
    lock_timeout_s: float = 60.0
    transition: str = "dissolve"  # for auto cuts; overrides and emergencies always hard-cut


@dataclass(frozen=True)
class CameraContext:
    """What the policy needs to know about a camera beyond its score."""

    speaking: bool = False  # speech on this camera right now
    safe_cut_at: float = 0.0  # earliest time that is not inside a word (0 = any time)
    quiet_at: float | None = None  # a moment of the last tick inside a pause: where a cut may be placed
    stale: bool = False  # no frames: never cut to it, leave it if on program


@dataclass(frozen=True)
class Override:
    action: str  # take | lock | release
    camera: str = ""
    timeout_s: float | None = None
    operator: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("take", "lock", "release"):
            raise ValueError(f"override action must be take, lock or release, not {self.action!r}")
        if self.action != "release" and not self.camera:
            raise ValueError(f"override {self.action} needs a camera")


@dataclass(frozen=True)
class Decision:
    t: float
    program: str
    cut: bool
    from_camera: str
    to_camera: str
    reason: str
    detail: str = ""
    transition: str = ""
    state: str = ""  # JSON snapshot of the policy state after this tick
    at: float | None = None  # exact program time of the cut when placed in a pause just before t (else t)

    @property
    def cut_time(self) -> float:
        return self.t if self.at is None else self.at

    def log_row(self, *, session_id: str, room: str, ts: float, tick: int, model_version: str, ab_variant: str,
                supervised: bool = False) -> dict:
        """This decision as a row of the feature log's `decisions` table."""
        return {"session_id": session_id, "room": room, "ts": ts, "tick": tick, "program_camera": self.program or "",
                "cut": self.cut, "from_camera": self.from_camera, "to_camera": self.to_camera,
                "reason": self.reason, "detail": self.detail[:500], "transition": self.transition,
                "policy_state": self.state, "supervised": supervised, "model_version": model_version,
                "ab_variant": ab_variant}


@dataclass
class _State:
    program: str = ""
    shot_start: float = 0.0
    last_auto_cut: float = -1e9
    left_camera: str = ""
    left_at: float = -1e9
    locked_until: float | None = None
    speech_wait_since: float | None = None  # when a cut first waited for the speaker's word boundary
    lead: str = ""  # the camera auto-direction currently wants, and since when
    lead_since: float = 0.0


class SwitchingPolicy:
    def __init__(self, config: PolicyConfig | None = None, tick_s: float = 0.2):
        self.config = config or PolicyConfig()
        self.tick_s = tick_s  # how far back a cut may be placed into a pause
        self.s = _State()

    def reset(self) -> None:
        self.s = _State()

    # ------------------------------------------------------------------------------------------------------------
    def step(self, t: float, scores: Mapping[str, float], context: Mapping[str, CameraContext] | None = None,
             overrides: Iterable[Override] = ()) -> Decision:
        cfg, s = self.config, self.s
        ctx = context or {}
        live = [c for c in scores if not ctx.get(c, CameraContext()).stale]

        decision = None
        for ov in overrides:
            decision = self._override(t, ov, live, scores) or decision
        if decision is not None:
            return decision

        if not s.program:
            if not live:
                return self._hold(t, "start", "no live camera yet")
            best = max(live, key=lambda c: scores[c])
            return self._cut(t, best, "start", f"{best} scores {scores[best]:.2f}", "cut", auto=False)

        if s.locked_until is not None:
            if t < s.locked_until and s.program in live:
                return self._hold(t, "locked", f"locked on {s.program} for {s.locked_until - t:.1f} s more")
            s.locked_until = None
            if s.program in live:
                s.shot_start = min(s.shot_start, t - cfg.min_hold_s)  # the operator held it long enough
                return self._hold(t, "lock_timeout", "manual lock expired: back to auto")

        if s.program not in live:
            others = [c for c in live if c != s.program]
            if not others:
                return self._hold(t, "program_lost", f"{s.program} is stale and no other camera is live")
            best = max(others, key=lambda c: scores[c])
            return self._cut(t, best, "program_lost", f"{s.program} stale; {best} scores {scores[best]:.2f}", "cut",
                             auto=False)

        eligible = [c for c in live if c != s.program
                    and not (c == s.left_camera and t - s.left_at < cfg.pingpong_window_s)]
        best = max(eligible, key=lambda c: scores[c]) if eligible else ""
        p_score = scores.get(s.program, 0.0)
        shot_len = t - s.shot_start
        want = reason = ""
        if cfg.wide_camera and cfg.wide_camera in live and s.program != cfg.wide_camera and \
                max(scores[c] for c in live) < cfg.wide_threshold:
            want, reason = cfg.wide_camera, "wide_fallback"
            detail = f"nothing scores above {cfg.wide_threshold:.2f}: wide shot {cfg.wide_camera}"
        elif best and shot_len >= cfg.max_shot_s:
            want, reason = best, "max_shot"
            detail = f"shot on {s.program} is {shot_len:.1f} s (max {cfg.max_shot_s:.0f} s): cutaway to {best}"
        elif best and scores[best] - p_score >= cfg.delta:
            want, reason = best, "delta"
            detail = f"{best} {scores[best]:.2f} vs {s.program} {p_score:.2f} (delta {scores[best] - p_score:.2f})"
        if not want:
            s.speech_wait_since = None
            s.lead = ""
            gap = f"; best other {best} {scores[best]:.2f}" if best else ""
            return self._hold(t, "hold", f"{s.program} {p_score:.2f}{gap}")
        if want != s.lead:
            s.lead, s.lead_since = want, t
        if reason == "delta" and t - s.lead_since < cfg.dwell_s - 1e-9:
            return self._hold(t, "dwell", f"{want} leads ({detail}) for {t - s.lead_since:.1f} s")
        if shot_len < cfg.min_hold_s:
            return self._hold(t, "min_hold", f"wants {want} ({reason}); shot is {shot_len:.1f} s")
        if t - s.last_auto_cut < cfg.cooldown_s:
            return self._hold(t, "cooldown", f"wants {want} ({reason}); last cut {t - s.last_auto_cut:.1f} s ago")
        pc = ctx.get(s.program, CameraContext())
        at = None
        if pc.speaking or pc.safe_cut_at > t:
            # mid-word now: cut in the pause the last tick had, if it had one (the program renderer runs behind
            # the decisions by more than a tick), else wait for the next boundary, at most speech_wait_max_s
            recent = pc.quiet_at is not None and t - pc.quiet_at <= self.tick_s and pc.quiet_at >= s.shot_start
            if recent and pc.safe_cut_at <= pc.quiet_at:
                at = pc.quiet_at
                detail += f"; placed in the pause at {at:.2f} s"
            else:
                if s.speech_wait_since is None:
                    s.speech_wait_since = t  # the wait starts when only the word stands in the way
                waited = t - s.speech_wait_since
                if waited < cfg.speech_wait_max_s - 1e-9:
                    return self._hold(t, "speech_wait", f"wants {want} ({reason}); {s.program} is mid-word")
                detail += f"; speech wait timed out after {waited:.1f} s"
        return self._cut(t, want, reason, detail, cfg.transition, auto=True, at=at)

    # ------------------------------------------------------------------------------------------------------------
    def _override(self, t: float, ov: Override, live: list[str], scores: Mapping[str, float]) -> Decision | None:
        s = self.s
        who = f" by {ov.operator}" if ov.operator else ""
        if ov.action == "release":
            if s.locked_until is None:
                return None
            s.locked_until = None
            return self._hold(t, "override_release", f"released{who}: back to auto")
        if ov.camera not in scores or ov.camera not in live:
            return self._hold(t, "override_rejected", f"{ov.action} {ov.camera}{who}: camera unknown or stale")
        if ov.action == "lock":
            timeout = self.config.lock_timeout_s if ov.timeout_s is None else ov.timeout_s
            s.locked_until = t + timeout
        else:
            s.locked_until = None
        reason = "override_take" if ov.action == "take" else "override_lock"
        detail = f"{ov.action} {ov.camera}{who}" + (f" for {s.locked_until - t:.0f} s" if s.locked_until else "")
        if s.program == ov.camera:
            return self._hold(t, reason, detail)
        return self._cut(t, ov.camera, reason, detail, "cut", auto=False)

    def _cut(self, t: float, to: str, reason: str, detail: str, transition: str, auto: bool,
             at: float | None = None) -> Decision:
        s = self.s
        frm = s.program
        when = t if at is None else at
        if frm:
            s.left_camera, s.left_at = frm, when
        s.program, s.shot_start, s.speech_wait_since, s.lead = to, when, None, ""
        if auto or reason.startswith("override"):
            s.last_auto_cut = when  # a manual cut also restarts the cooldown: no auto cut right after the operator's
        return Decision(t, to, True, frm, to, reason, detail, transition, self.snapshot(), at)

    def _hold(self, t: float, reason: str, detail: str) -> Decision:
        return Decision(t, self.s.program, False, "", "", reason, detail, "", self.snapshot())

    def snapshot(self) -> str:
        return json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self.s).items()},
                          separators=(",", ":"))


def contexts(observations, t: float, own_speech_db: float = 6.0) -> dict[str, CameraContext]:
    """Policy context from analysis observations (features.observations.CameraObservation).

    A camera counts as speaking only when the speech is its own: its level is within `own_speech_db` of the loudest
    camera. A wide mic that hears a speaker as bleed does not hold a cut to that speaker's own camera (the word
    goes on, louder, on the new camera's audio).
    """
    top = max((o.audio_dbfs for o in observations), default=-120.0)
    out = {}
    for o in observations:
        own = o.audio_dbfs >= top - own_speech_db
        out[o.camera_id] = CameraContext(speaking=o.speaking and own, safe_cut_at=o.next_safe_cut(t) if own else 0.0,
                                         quiet_at=o.quiet_at, stale=o.stale)
    return out


@dataclass
class TickInput:
    t: float
    scores: dict[str, float]
    context: dict[str, CameraContext] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)


def replay(ticks: Iterable[TickInput], config: PolicyConfig | None = None, tick_s: float = 0.2) -> list[Decision]:
    """Run a fresh policy over recorded ticks (offline evaluation uses exactly this)."""
    policy = SwitchingPolicy(config, tick_s)
    return [policy.step(k.t, k.scores, k.context, k.overrides) for k in ticks]
