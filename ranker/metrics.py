"""Editing metrics of a program timeline, shared by `aiobs direct` reports and offline replay evaluation.

A program is a list of `Shot`s on the session clock. Ground truth, when there is any, is a list of spoken lines:
{"camera": speaker's camera, "start", "end", "words": [[start, end, text], ...]}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class Shot:
    camera: str
    start: float
    end: float
    reason: str = ""  # why the cut INTO this shot happened
    transition: str = "cut"

    @property
    def duration(self) -> float:
        return self.end - self.start


def shots_from_decisions(decisions: Iterable, end_t: float) -> list[Shot]:
    """Shots from a policy's decisions (objects with cut_time, cut, to_camera, reason, transition)."""
    shots: list[Shot] = []
    for d in decisions:
        if not d.cut:
            continue
        t = getattr(d, "cut_time", d.t)
        if shots:
            shots[-1] = Shot(shots[-1].camera, shots[-1].start, t, shots[-1].reason, shots[-1].transition)
        shots.append(Shot(d.to_camera, t, end_t, d.reason, d.transition or "cut"))
    return shots


def program_at(shots: Sequence[Shot], times: np.ndarray) -> np.ndarray:
    starts = np.array([s.start for s in shots])
    idx = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, len(shots) - 1)
    return np.array([shots[i].camera for i in idx], dtype=object)


def switches_per_min(shots: Sequence[Shot], duration_s: float) -> float:
    return (max(0, len(shots) - 1)) / max(duration_s / 60.0, 1e-9)


def mean_shot_s(shots: Sequence[Shot]) -> float:
    return float(np.mean([s.duration for s in shots])) if shots else 0.0


def ping_pong(shots: Sequence[Shot], window_s: float = 8.0) -> int:
    """A -> B -> A where the B shot was shorter than `window_s`."""
    return sum(1 for a, b, c in zip(shots, shots[1:], shots[2:]) if a.camera == c.camera and b.duration < window_s)


def turns(lines: Sequence[dict]) -> list[dict]:
    """Turns of the conversation: consecutive regular lines (not backchannels) of one speaker, in time order."""
    out: list[dict] = []
    for line in sorted((ln for ln in lines if ln.get("kind", "line") != "backchannel"), key=lambda ln: ln["start"]):
        if out and out[-1]["camera"] == line["camera"]:
            out[-1]["end"] = max(out[-1]["end"], line["end"])
            out[-1]["lines"].append(line)
        else:
            out.append({"camera": line["camera"], "start": line["start"], "end": line["end"], "lines": [line]})
    return out


def mid_word_cuts(shots: Sequence[Shot], lines: Sequence[dict], audio_lead_s: float = 0.0,
                  tolerance_s: float = 0.03) -> int:
    """Cuts whose program-audio switch (the picture cut minus `audio_lead_s`) falls inside a word of ANY speaker:
    the program audio would chop that word."""
    words = [(s, e) for line in lines for s, e, _ in line["words"]]
    return sum(1 for nxt in shots[1:]
               if any(s + tolerance_s < nxt.start - audio_lead_s < e - tolerance_s for s, e in words))


def backchannel_cuts(shots: Sequence[Shot], lines: Sequence[dict], after_s: float = 1.5) -> int:
    """Cuts to the camera of someone who only said a backchannel ("yeah") around then, not a turn of their own."""
    regular = [ln for ln in lines if ln.get("kind", "line") != "backchannel"]
    n = 0
    for sh in shots[1:]:
        hit = any(b["camera"] == sh.camera and b["start"] - 0.5 <= sh.start <= b["end"] + after_s
                  for b in lines if b.get("kind") == "backchannel")
        own_turn = any(r["camera"] == sh.camera and sh.start - 1.0 <= r["start"] <= sh.start + 2.0 for r in regular)
        n += hit and not own_turn
    return n


def speaker_follow(shots: Sequence[Shot], lines: Sequence[dict], exclude_after_change_s: float = 1.5,
                   step_s: float = 0.05) -> float | None:
    """Share of each turn's speech time, after its first `exclude_after_change_s`, on which the program shows that
    speaker's camera (backchannels are not turns)."""
    if not lines or not shots:
        return None
    times, want = [], []
    for turn in turns(lines):
        for line in turn["lines"]:
            for t in np.arange(max(line["start"], turn["start"] + exclude_after_change_s), line["end"], step_s):
                times.append(t)
                want.append(turn["camera"])
    if not times:
        return None
    shown = program_at(shots, np.asarray(times))
    return float(np.mean(shown == np.asarray(want, dtype=object)))


def turn_reactions(shots: Sequence[Shot], lines: Sequence[dict], early_s: float = 1.0) -> list[float]:
    """For every turn after the first: seconds from its first word until the program shows its speaker (negative =
    the cut came in the pause before the first word; the whole turn when the speaker never came on)."""
    out = []
    ts = turns(lines)
    for turn in ts[1:]:
        probe = np.arange(turn["start"] - early_s, turn["end"], 0.02)
        shown = program_at(shots, probe) == turn["camera"]
        if shown[0]:  # already on before the turn: how long before its first word did it come on
            start = max((s.start for s in shots if s.camera == turn["camera"] and s.start <= probe[0]), default=0.0)
            out.append(float(max(start - turn["start"], -early_s)))
        elif shown.any():
            out.append(float(probe[int(np.argmax(shown))] - turn["start"]))
        else:
            out.append(float(turn["end"] - turn["start"]))
    return out


def frame_agreement(a: Sequence[Shot], b: Sequence[Shot], start: float, end: float, step_s: float = 0.2) -> float:
    """Share of sample times at which two programs show the same camera."""
    t = np.arange(start, end, step_s)
    return float(np.mean(program_at(a, t) == program_at(b, t))) if len(t) else 0.0


def disagreements(program: Sequence[Shot], human: Sequence[Shot], start: float, end: float,
                  step_s: float = 0.2) -> list[dict]:
    """The spans where `program` shows another camera than `human`, on frame_agreement's sample grid (so their
    seconds add up to (1 - agreement) x duration): start, end, seconds, the human's camera, the program's camera."""
    t = np.arange(start, end, step_s)
    if not len(t) or not program or not human:
        return []
    p, h = program_at(program, t), program_at(human, t)
    spans, i = [], 0
    while i < len(t):
        if p[i] == h[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(t) and p[j + 1] == p[i] and h[j + 1] == h[i]:
            j += 1
        s, e = float(t[i]), float(min(end, t[j] + step_s))
        spans.append({"start": round(s, 3), "end": round(e, 3), "seconds": round(e - s, 3), "human": h[i],
                      "program": p[i]})
        i = j + 1
    return spans


def summary(shots: Sequence[Shot], duration_s: float, lines: Sequence[dict] | None = None,
            audio_lead_s: float = 0.0) -> dict:
    out = {
        "cuts": max(0, len(shots) - 1),
        "switches_per_min": round(switches_per_min(shots, duration_s), 3),
        "mean_shot_s": round(mean_shot_s(shots), 3),
        "ping_pong": ping_pong(shots),
        "mid_word_cuts": mid_word_cuts(shots, lines, audio_lead_s) if lines else None,
        "backchannel_cuts": backchannel_cuts(shots, lines) if lines else None,
        "speaker_follow": None,
        "turn_reaction_p50_s": None,
        "turn_reaction_p95_s": None,
    }
    if lines:
        f = speaker_follow(shots, lines)
        out["speaker_follow"] = None if f is None else round(f, 4)
        r = turn_reactions(shots, lines)
        if r:
            out["turn_reaction_p50_s"] = round(float(np.percentile(r, 50)), 3)
            out["turn_reaction_p95_s"] = round(float(np.percentile(r, 95)), 3)
    return out
