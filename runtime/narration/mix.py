"""Narration into program sound, in one place for files (runtime/render.py) and live (runtime/live.py): the program
ducks under each line (ramped in and out so nothing clicks) and the line is added on top."""

from __future__ import annotations

import numpy as np

RAMP_S = 0.12  # the program's sound fades down this long before a line and back up after it


def lines_near(lines, t0: float, t1: float) -> list:
    """The lines that may sound between t0 and t1 (lines are placed in order and never overlap), newest first."""
    out = []
    for u in reversed(lines):
        if u.end < t0:
            break
        if u.start <= t1:
            out.append(u)
    return out


def narration_samples(s0: int, n: int, rate: int, lines) -> np.ndarray:
    """Samples [s0, s0 + n) of the narration alone (the live `narration` track), lines at `rate`."""
    out = np.zeros(n, np.float32)
    for u in lines:
        a = int(round(u.start * rate))
        b = a + u.samples.size
        lo, hi = max(a, s0), min(b, s0 + n)
        if hi > lo:
            out[lo - s0:hi - s0] += u.samples[lo - a:hi - a]
    return out


def duck_gain(s0: int, n: int, rate: int, lines, duck_db: float) -> np.ndarray | None:
    """The program's gain for samples [s0, s0 + n): 1 away from narration, 10^(duck_db/20) under it; None = all 1."""
    floor = float(10 ** (duck_db / 20))
    ramp = max(1, int(RAMP_S * rate))
    g = None
    idx = None
    for u in lines:
        a = int(round(u.start * rate))
        b = a + u.samples.size
        if b + ramp <= s0 or a - ramp >= s0 + n:
            continue
        if idx is None:
            idx = np.arange(s0, s0 + n)
            g = np.ones(n, np.float32)
        # depth of the duck: 0 outside, 1 inside, linear over `ramp` on both sides
        depth = np.clip(np.minimum(idx - (a - ramp), (b + ramp) - idx) / ramp, 0.0, 1.0)
        g = np.minimum(g, 1.0 - depth * (1.0 - floor)).astype(np.float32)
    return g


def mix_into_program(program: np.ndarray, s0: int, rate: int, lines, duck_db: float) -> np.ndarray:
    """The program's samples [s0, s0 + len) with every line overlapping them mixed in over a ducked program."""
    if not lines:
        return program
    g = duck_gain(s0, program.size, rate, lines, duck_db)
    if g is None:
        return program
    return np.clip(program * g + narration_samples(s0, program.size, rate, lines), -1.0, 1.0).astype(np.float32)
