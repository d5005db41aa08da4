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


def mid_word_cuts(shots: Sequence[Shot], lines: Sequence[dict], tolerance_s: float = 0.03) -> int:
    """Cuts that fall inside a word spoken by the speaker of the camera being cut away from (that word would be
    chopped off the program audio)."""
    n = 0
    for prev, nxt in zip(shots, shots[1:]):
        t = nxt.start
        for line in lines:
            if line["camera"] != prev.camera or not (line["start"] - 1 <= t <= line["end"] + 1):
                continue
            if any(s + tolerance_s < t < e - tolerance_s for s, e, _ in line["words"]):
                n += 1
                break
    return n


def speaker_follow(shots: Sequence[Shot], lines: Sequence[dict], exclude_after_change_s: float = 3.0,
                   step_s: float = 0.1) -> float | None:
    """Share of speech time the program shows the active speaker's camera, excluding the first
    `exclude_after_change_s` after each change of speaker (the director's reaction and hold window)."""
    if not lines or not shots:
        return None
    ordered = sorted(lines, key=lambda l: l["start"])
    times, want = [], []
    prev_cam, change_t = None, -1e9
    for line in ordered:
        if line["camera"] != prev_cam:
            change_t = line["start"]
            prev_cam = line["camera"]
        for t in np.arange(line["start"], line["end"], step_s):
            if t - change_t >= exclude_after_change_s:
                times.append(t)
                want.append(line["camera"])
    if not times:
        return None
    shown = program_at(shots, np.asarray(times))
    return float(np.mean(shown == np.asarray(want, dtype=object)))


def frame_agreement(a: Sequence[Shot], b: Sequence[Shot], start: float, end: float, step_s: float = 0.2) -> float:
    """Share of sample times at which two programs show the same camera."""
    t = np.arange(start, end, step_s)
    return float(np.mean(program_at(a, t) == program_at(b, t))) if len(t) else 0.0


def summary(shots: Sequence[Shot], duration_s: float, lines: Sequence[dict] | None = None) -> dict:
    out = {
        "cuts": max(0, len(shots) - 1),
        "switches_per_min": round(switches_per_min(shots, duration_s), 3),
        "mean_shot_s": round(mean_shot_s(shots), 3),
        "ping_pong": ping_pong(shots),
        "mid_word_cuts": mid_word_cuts(shots, lines or []) if lines else None,
        "speaker_follow": None,
    }
    if lines:
        f = speaker_follow(shots, lines)
        out["speaker_follow"] = None if f is None else round(f, 4)
    return out
