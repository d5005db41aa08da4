"""The switching policy: one pure, deterministic object that turns per-tick camera scores into cuts.

The same code runs live, on files (`aiobs direct`) and in offline replay evaluation, so a rule is written once.
It holds no clock and does no I/O: everything it knows arrives in `step()`. Rules, in the order they are checked:

1. manual override: `take` cuts now; `lock` cuts and holds until `release` or its auto-resume timeout;
2. start: the first tick cuts to the best camera;
3. program lost: the program camera went stale -> cut to the best live camera now (no hold, no speech wait);
4. what auto-direction wants: the wide shot when nothing scores above `wide_threshold` (if a wide camera is set);
   a cutaway when the shot is older than `max_shot_s`; a TURN: the camera that took the conversation's floor
   (features/conversation.py) when it scores within `delta` of the best; else the best other camera when it beats
   the program by at least `delta` — unless that camera is talking without holding the floor (a backchannel or an
   interruption: `turn_wait`). Ping-pong suppression: the camera just left is not eligible for
   `pingpong_window_s`; a delta cut also needs the same camera to lead for `dwell_s` (a debounce against one-tick
   blips). A turn is exempt from both and from the cooldown: the floor logic already debounced it;
5. minimum hold: no auto cut before the shot is `min_hold_s` old (`opening_hold_s` for the opening shot, taken
   before anyone spoke: the first speaker gets the picture from their first word);
6. cooldown: no auto cut within `cooldown_s` of the previous auto cut;
7. placement: with a lookahead (`lookahead_s`, the program delay; files know the whole future) the cut is placed
   back in time in a pause where nobody speaks — for a turn, the pause just before the new speaker's first word —
   with the program audio switching `audio_lead_s` before the picture (J-cut; negative = L-cut). Without a
   lookahead, or with no pause in it: while the program camera's speaker is mid-word the cut goes into the last
   tick's pause or waits for the next word boundary, at most `speech_wait_max_s`.

Every `Decision` names the rule that decided (`reason`) and the numbers behind it (`detail`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterable, Mapping, Sequence

MAX_ID_LEN = 128  # camera and operator ids
MAX_LOCK_S = 24 * 3600.0


# the policy's timing that is learned from human directors with the ranker (ranker/train.py `tune`), carried by the
# model (ranker/xgb.py) and applied by the director core for the sessions it directs: how long a shot is held at least,
# the pause between automatic cuts, how much better another camera must score, and for how long (the reaction), and
# whether a talking floor-holder on program is held against a better-scoring silent camera (cuts still never land
# inside a word either way), how soon the camera just left may be taken again (the ping-pong window), and whether a
# change of floor cuts to the new speaker even when the ranker prefers the shot on air
TUNED_FIELDS = ("min_hold_s", "cooldown_s", "delta", "dwell_s", "hold_speaker", "pingpong_window_s",
                "follow_every_turn")
# how far back a cut in recorded media may be placed when the policy sets no lookahead of its own (`aiobs direct`, the
# real-media evaluation): a file knows its future
FILES_LOOKAHEAD_S = 3.0


@dataclass(frozen=True)
class PolicyConfig:
    min_hold_s: float = 2.0
    opening_hold_s: float = 0.5  # the minimum hold of the session's opening shot
    cooldown_s: float = 4.0
    delta: float = 0.15
    dwell_s: float = 0.6  # the same camera must lead by `delta` this long before an auto cut (debounce)
    # the camera just left is not taken again by a score cut for this long (turns are exempt). 3 s stops flicker and
    # still follows a quick exchange: with 8 s even a perfect ranker replayed only 0.78-0.83 of simulated humans'
    # programs, and the rule baseline lost the speaker on the real-media set (follow 0.951 vs 1.0 at 3 s)
    pingpong_window_s: float = 3.0
    speech_wait_max_s: float = 1.5
    wide_camera: str | None = None
    wide_threshold: float = 0.2
    max_shot_s: float = 30.0
    lock_timeout_s: float = 60.0
    transition: str = "dissolve"  # for auto cuts; overrides and emergencies always hard-cut
    own_speech_db: float = 6.0  # speech on a camera counts as its own within this many dB of the loudest camera
    lookahead_s: float = 0.0  # how far back a decided cut may be placed (the program delay; `aiobs direct`: 3 s)
    audio_lead_s: float = 0.0  # program audio switches this long before the picture (J-cut); < 0 = after (L-cut)
    min_turn_s: float = 1.0  # a new speaker takes the floor after talking this long (backchannels are shorter)
    takeover_s: float = 2.5  # in overlapping speech the floor passes only after the newcomer talked this long
    utterance_gap_s: float = 0.5  # a silence longer than this ends an utterance
    shared_audio_db: float = 1.0  # cameras whose levels are this close hear one shared mix: the picture tells who speaks
    visual_speaking_min: float = 0.02  # subject motion that reads as a talking face
    floor_min_speech_prob: float = 0.6  # the floor passes only to a camera whose last second is this surely speech
    turn_window_s: float = 1.5  # a change of floor asks for a cut to the new speaker for this long, then it is over
    min_pause_s: float = 0.05  # the shortest pause a cut is placed in
    # a cut to a new speaker is placed this long before their first word (in the pause, never before its middle): the
    # first syllable is on picture even when their sound reaches the director a little later than their picture
    onset_lead_s: float = 0.25
    turn_hold_s: float = 1.0  # the minimum hold before a cut to a new speaker (quick exchanges are cut as they go)
    delta_at_onset: bool = True  # a score cut to a camera that is talking is placed before its first word too
    hold_speaker: bool = True  # no score cut away from the floor-holder on program while they talk, to a silent camera
    # a change of floor cuts to the new speaker even when the ranker scores the shot on air higher (the new speaker
    # need only be within `delta` of the best other camera); False: only when the new speaker is within `delta` of
    # the shot on air too, so a ranker that wants to stay (a director who lets a new speaker settle first, or holds a
    # reaction shot) is obeyed. Learned with the timing: with True, a scene oracle replayed only 0.86 of simulated
    # patient directors' programs, with False 0.94
    follow_every_turn: bool = True

    def __post_init__(self) -> None:
        for name in ("min_hold_s", "opening_hold_s", "cooldown_s", "delta", "dwell_s", "pingpong_window_s", "speech_wait_max_s",
                     "wide_threshold", "max_shot_s", "lock_timeout_s", "own_speech_db", "lookahead_s", "min_turn_s",
                     "takeover_s", "utterance_gap_s", "min_pause_s", "turn_window_s", "floor_min_speech_prob", "shared_audio_db", "visual_speaking_min",
                     "onset_lead_s", "turn_hold_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"policy {name} must be a finite number >= 0, not {v!r}")
        if not math.isfinite(self.audio_lead_s) or abs(self.audio_lead_s) > 2.0:
            raise ValueError(f"policy audio_lead_s must be within [-2, 2] s, not {self.audio_lead_s!r}")
        for name in ("delta_at_onset", "hold_speaker", "follow_every_turn"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"policy {name} must be true or false, not {getattr(self, name)!r}")
        if self.transition not in ("cut", "dissolve"):
            raise ValueError(f"policy transition must be cut or dissolve, not {self.transition!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def with_tuned(self, tuned: Mapping | None) -> "PolicyConfig":
        """This configuration with a model's learned timing (`TUNED_FIELDS` from `tuned`, e.g. `XGBoostRanker.policy`)
        in place of its own; everything else (lookahead, wide camera, speech rules) stays the front door's."""
        if not tuned:
            return self
        unknown = sorted(set(tuned) - set(TUNED_FIELDS))
        if unknown:
            raise ValueError(f"not a learned policy setting: {unknown}; the learned ones are {list(TUNED_FIELDS)}")
        return replace(self, **{k: bool(v) if isinstance(getattr(self, k), bool) else float(v)
                                 for k, v in tuned.items()})

    @classmethod
    def from_mapping(cls, values: Mapping) -> "PolicyConfig":
        """From a dict (settings, a logged JSON, MLflow params); unknown keys are an error that names them."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown policy setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))


@dataclass(frozen=True)
class CameraContext:
    """What the policy needs to know about a camera beyond its score."""

    speaking: bool = False  # speech on this camera right now
    safe_cut_at: float = 0.0  # earliest time that is not inside a word (0 = any time)
    quiet_at: float | None = None  # a moment of the last tick inside a pause: where a cut may be placed
    stale: bool = False  # no frames: never cut to it, leave it if on program
    talking: bool = False  # an utterance of this camera's own speech is going on
    floor: bool = False  # this camera holds the conversation's floor
    floor_since: float | None = None  # when it took the floor
    onset: float | None = None  # start of its current utterance

    def mid_word(self, t: float) -> bool:
        """A cut at time t would chop a word of this camera's own speech."""
        return self.speaking or self.safe_cut_at > t


@dataclass(frozen=True)
class Override:
    action: str  # take | lock | release
    camera: str = ""
    timeout_s: float | None = None
    operator: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("take", "lock", "release"):
            raise ValueError(f"override action must be take, lock or release, not {self.action!r}")
        for name in ("camera", "operator"):
            v = getattr(self, name)
            if not isinstance(v, str) or len(v) > MAX_ID_LEN:
                raise ValueError(f"override {name} must be a string of at most {MAX_ID_LEN} characters, not {v!r:.80}")
        if self.action != "release" and not self.camera:
            raise ValueError(f"override {self.action} needs a camera")
        if self.timeout_s is not None:
            ok = isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool) \
                and math.isfinite(self.timeout_s) and 0 < self.timeout_s <= MAX_LOCK_S
            if not ok:
                raise ValueError(f"override timeout_s must be a number of seconds in (0, {MAX_LOCK_S:.0f}], "
                                 f"not {self.timeout_s!r:.80}")
            object.__setattr__(self, "timeout_s", float(self.timeout_s))

    @property
    def by(self) -> str:
        """The decision detail's ' by <operator>', or nothing when no operator is named."""
        return f" by {self.operator}" if self.operator else ""

    @classmethod
    def from_message(cls, msg: Mapping) -> "Override":
        """From a decoded JSON message {"action", "camera", "timeout_s", "operator"}; ValueError says what is wrong."""
        unknown = sorted(set(msg) - {"action", "camera", "timeout_s", "operator"})
        if unknown:
            raise ValueError(f"override has unknown field(s) {unknown}")
        if "action" not in msg:
            raise ValueError("override needs an action (take, lock or release)")
        return cls(msg["action"], msg.get("camera", ""), msg.get("timeout_s"), msg.get("operator", ""))


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
    # what became of each override of this tick, in order: (outcome, detail), the outcome "obeyed", "rejected" (its
    # camera unknown or without a picture) or "ignored" (a release with nothing locked)
    outcomes: tuple[tuple[str, str], ...] = ()

    @property
    def cut_time(self) -> float:
        return self.t if self.at is None else self.at


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

    # ------------------------------------------------------------------------------------------------------------
    def step(self, t: float, scores: Mapping[str, float], context: Mapping[str, CameraContext] | None = None,
             overrides: Iterable[Override] = (),
             pauses: Callable[[Sequence[str]], Sequence[tuple[float, float]]] | None = None) -> Decision:
        """`pauses(cameras)`: the stretches of the last `lookahead_s` (oldest first) in which those cameras' mics
        carried no voice: where the program audio may switch between them without chopping a word."""
        cfg, s = self.config, self.s
        ctx = context or {}
        live = [c for c in scores if not ctx.get(c, CameraContext()).stale]

        before, decisions, outcomes = s.program, [], []
        for ov in overrides:
            d = self._override(t, ov, live, scores)
            if d is None:
                outcomes.append(("ignored", f"{ov.action}{ov.by}: nothing was locked"))
                continue
            decisions.append(d)
            outcomes.append(("rejected" if d.reason == "override_rejected" else "obeyed", d.detail))
        if decisions:  # several in one tick: the decision says where the program ended up, and why
            last = decisions[-1]
            if s.program == before:
                d = last if not last.cut else self._hold(t, last.reason, last.detail)
                return replace(d, outcomes=tuple(outcomes))
            final = next(d for d in reversed(decisions) if d.cut)
            detail = "; ".join(d.detail for d in decisions)
            return Decision(t, s.program, True, before, s.program, final.reason, detail, "cut", self.snapshot(),
                            outcomes=tuple(outcomes))
        if outcomes:  # (only releases with nothing locked: the tick goes on as if there were none)
            return replace(self.step(t, scores, context, (), pauses), outcomes=tuple(outcomes))

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
        holder = next((c for c in live if ctx.get(c, CameraContext()).floor), "")
        fresh = holder and ctx[holder].floor_since is not None and t - ctx[holder].floor_since <= cfg.turn_window_s
        top_other = max((scores[c] for c in live if c != s.program), default=-1.0)
        turn_bar = top_other if cfg.follow_every_turn else max(top_other, p_score)  # what a new speaker must be near
        want = reason = ""
        if cfg.wide_camera and cfg.wide_camera in live and s.program != cfg.wide_camera and \
                max(scores[c] for c in live) < cfg.wide_threshold:
            want, reason = cfg.wide_camera, "wide_fallback"
            detail = f"nothing scores above {cfg.wide_threshold:.2f}: wide shot {cfg.wide_camera}"
        elif best and shot_len >= cfg.max_shot_s:
            want, reason = best, "max_shot"
            detail = f"shot on {s.program} is {shot_len:.1f} s (max {cfg.max_shot_s:.0f} s): cutaway to {best}"
        elif fresh and holder != s.program and scores[holder] >= turn_bar - cfg.delta:
            want, reason = holder, "turn"
            onset = ctx[holder].onset
            detail = (f"{holder} took the floor" + (f" (talking since {onset:.2f} s)" if onset is not None else "")
                      + f"; {holder} {scores[holder]:.2f} vs {s.program} {p_score:.2f}")
        elif best and scores[best] - p_score >= cfg.delta:
            bc = ctx.get(best, CameraContext())
            if bc.talking and not bc.floor and holder:
                s.lead = ""
                return self._hold(t, "turn_wait", f"{best} leads ({scores[best]:.2f} vs {p_score:.2f}) but talks "
                                                  f"without the floor ({holder} has it): a backchannel or an "
                                                  f"interruption")
            pc = ctx.get(s.program, CameraContext())
            if cfg.hold_speaker and pc.floor and pc.talking and not bc.talking:
                s.lead = ""
                return self._hold(t, "speaker_hold", f"{best} leads ({scores[best]:.2f} vs {p_score:.2f}) but "
                                                     f"{s.program} has the floor and is talking: no cutaway to a "
                                                     f"silent camera mid-utterance")
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
        if shot_len < self._hold_s(reason == "turn"):
            return self._hold(t, "min_hold", f"wants {want} ({reason}); shot is {shot_len:.1f} s")
        if reason != "turn" and t - s.last_auto_cut < cfg.cooldown_s:
            return self._hold(t, "cooldown", f"wants {want} ({reason}); last cut {t - s.last_auto_cut:.1f} s ago")
        if cfg.lookahead_s > 0:  # a pause of everyone within the lookahead, else wait for one (bounded)
            at_onset = reason == "turn" or (reason == "delta" and cfg.delta_at_onset and ctx[want].talking)
            placed = self._place(t, pauses([s.program, want]) if pauses else (),
                                 ctx[want].onset if at_onset else None, turn=reason == "turn")
            if placed is not None:
                where = f"; placed in the pause at {placed - cfg.audio_lead_s:.2f} s"
                return self._cut(t, want, reason, detail + where, cfg.transition, auto=True, at=placed)
            if s.speech_wait_since is None:
                s.speech_wait_since = t
            waited = t - s.speech_wait_since
            if waited < cfg.speech_wait_max_s + cfg.lookahead_s - 1e-9:  # a sentence ends within a few seconds
                return self._hold(t, "speech_wait", f"wants {want} ({reason}); no pause to cut in yet")
            return self._cut(t, want, reason, detail + f"; no pause for {waited:.1f} s: cut anyway", cfg.transition,
                             auto=True)
        pc = ctx.get(s.program, CameraContext())
        at = None
        if pc.mid_word(t):
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

    def _hold_s(self, turn: bool = False) -> float:
        """The current shot's minimum hold: shorter for the opening shot (no cut since the start), and before a cut
        to a new speaker (`turn_hold_s`)."""
        c = self.config
        hold = min(c.opening_hold_s, c.min_hold_s) if self.s.left_camera == "" else c.min_hold_s
        return min(hold, c.turn_hold_s) if turn else hold

    def _place(self, t: float, pauses: Sequence[tuple[float, float]], onset: float | None,
               turn: bool = False) -> float | None:
        """The picture time of a cut placed in a pause within the lookahead (the audio switches `audio_lead_s`
        earlier, in the middle of the pause), or None when no pause fits. For a turn: the pause just before the new
        speaker's first word, else the first one after it; otherwise the latest pause."""
        cfg, s = self.config, self.s
        lead = cfg.audio_lead_s
        lo = max(t - cfg.lookahead_s, s.shot_start)  # not yet on air, after the current shot began
        lo = max(lo, s.shot_start + self._hold_s(turn) - lead)  # the picture respects the minimum hold
        hi = min(t, t - lead)  # neither audio nor picture in the future
        fits = [(max(a, lo), min(b, hi)) for a, b in pauses]
        fits = [(a, b) for a, b in fits if b - a >= cfg.min_pause_s - 1e-9]
        # a real pause (between sentences or turns) beats a dip between two syllables that the VAD let through
        fits = [p for p in fits if p[1] - p[0] >= 3 * cfg.min_pause_s - 1e-9] or fits
        if not fits:
            return None
        if onset is not None:  # the pause that ends at the new speaker's first word, else the first one after it
            before = [p for p in fits if p[0] <= onset + 1e-9 and p[1] >= onset - 2 * cfg.min_pause_s]
            after = [p for p in fits if p[0] > onset]
            if not (before or after):
                if turn:
                    return None  # the pause before the first word was not clean: wait for the next one
                a, b = fits[-1]  # a score cut to a talker: at least not inside anyone's word
                return (a + b) / 2 + lead
            a, b = before[-1] if before else after[0]
            if before:  # just before the first word: onsets are sharp, the end of the last speaker's word is not
                b = min(b, onset)
                return max(a + (b - a) / 2, b - cfg.onset_lead_s) + lead
        else:
            a, b = fits[-1]
        return (a + b) / 2 + lead

    # ------------------------------------------------------------------------------------------------------------
    def _override(self, t: float, ov: Override, live: list[str], scores: Mapping[str, float]) -> Decision | None:
        s = self.s
        who = ov.by
        if ov.action == "release":
            if s.locked_until is None:
                return None
            s.locked_until = None
            return self._hold(t, "override_release", f"released{who}: back to auto")
        if ov.camera not in scores:
            return self._hold(t, "override_rejected", f"{ov.action} {ov.camera}{who}: no such camera in this tick")
        if ov.camera not in live:
            return self._hold(t, "override_rejected", f"{ov.action} {ov.camera}{who}: {ov.camera} has no picture "
                                                      f"(stale): the director cuts only to cameras sending video")
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
        # (the state's fields are flat scalars: vars() in field order, without asdict's deep copy, which cost a
        # tenth of every replayed tick)
        return json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self.s).items()},
                          separators=(",", ":"))
