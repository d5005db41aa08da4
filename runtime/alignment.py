"""Audio alignment of recorded cameras: where each file starts on one session clock.

Every camera's onset envelope (rises of the log energy, 100 Hz) is cross-correlated with every camera already placed;
a camera is placed by its most confident match (~10 ms resolution). Onsets (a word starting, a door closing) align
recordings far better than raw loudness, which periodic music or room tone can dominate.
"""

from __future__ import annotations

import numpy as np

from .media import SAMPLE_RATE


def _onsets(x: np.ndarray, rate: int = 100) -> np.ndarray:
    """Onset strength at `rate` Hz: rises of the log energy envelope, normalised. Onsets (a word starting, a door
    closing) align recordings far better than raw loudness, which periodic music or room tone can dominate."""
    hop = SAMPLE_RATE // rate
    n = x.size // hop
    if n < 2:
        return np.zeros(0)
    e = np.log(np.sqrt(np.mean(np.square(x[:n * hop].reshape(n, hop)), axis=1) + 1e-12))
    d = np.maximum(0.0, np.diff(e, prepend=e[0]))
    return (d - d.mean()) / (d.std() + 1e-9)


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag of b behind a in envelope steps, confidence = peak / best peak elsewhere)."""
    n = min(len(a), len(b))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(a[:n], size) * np.conj(np.fft.rfft(b[:n], size)), size)
    lags = np.r_[np.arange(0, n), np.arange(-n + 1, 0)]
    vals = np.r_[xc[:n], xc[size - n + 1:]]
    ok = np.abs(lags) <= max_lag
    lags, vals = lags[ok], vals[ok]
    i = int(np.argmax(vals))
    others = vals[np.abs(lags - lags[i]) > 20]
    second = float(others.max()) if others.size else 0.0
    return int(lags[i]), float(vals[i] / second) if second > 0 else float("inf")


def align_offsets(cams: list, max_lag_s: float = 10.0, min_confidence: float = 1.3
                  ) -> tuple[dict[str, float], list[str]]:
    """Session offsets from audio: every camera's onset envelope is cross-correlated with every camera already
    placed, and placed by its most confident match (~10 ms resolution). Cameras without audio, or whose best match
    is not confident, keep offset 0 and are reported."""
    env = {c.id: _onsets(c.audio) for c in cams if c.has_audio}
    env = {k: v for k, v in env.items() if len(v) >= 200}
    offsets = {c.id: 0.0 for c in cams}
    notes = []
    if not env:
        return offsets, notes
    placed = {next(iter(env)): 0.0}
    pending = [k for k in env if k not in placed]
    while pending:
        best = None
        for cid in pending:
            for anchor, off in placed.items():
                lag, conf = _best_lag(env[anchor], env[cid], int(max_lag_s * 100))
                if best is None or conf > best[2]:
                    best = (cid, off + lag / 100.0, conf)
        cid, off, conf = best
        pending.remove(cid)
        if conf < min_confidence:
            notes.append(f"{cid}: audio alignment not confident (peak ratio {conf:.2f}); offset 0 assumed")
            off = 0.0
        placed[cid] = off
    offsets.update(placed)
    base = min(offsets.values())
    return {k: round(v - base, 3) for k, v in offsets.items()}, notes
