"""The simple alternatives a user would pick instead of AI-OBS, run on the same sessions in quality benchmarks.

`loudest_mic`: the classic voice-activated switcher. Each camera's mic level (RMS, dBFS, 10 ms frames) is smoothed
with an exponential moving average; when another camera is `margin_db` louder than the program camera for
`confirm_s`, and the shot is at least `hold_s` old, it cuts to it.
"""

from __future__ import annotations

import numpy as np

from .metrics import Shot


def mic_levels(audio: np.ndarray, sample_rate: int, frame_s: float = 0.01) -> np.ndarray:
    """dBFS per `frame_s` frame."""
    hop = max(1, int(sample_rate * frame_s))
    n = audio.size // hop
    if n == 0:
        return np.zeros(0)
    rms = np.sqrt(np.mean(np.square(audio[:n * hop].reshape(n, hop).astype(np.float64)), axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def loudest_mic(audio: dict[str, np.ndarray], sample_rate: int, duration_s: float, *, ema_s: float = 0.3,
                margin_db: float = 6.0, confirm_s: float = 0.5, hold_s: float = 2.0, frame_s: float = 0.01
                ) -> list[Shot]:
    """The loudest-mic program of a session: `audio` = camera -> its mic on the session clock (zeros where it did
    not record)."""
    cams = sorted(audio)
    n = int(duration_s / frame_s)
    levels = np.full((len(cams), n), -120.0)
    for i, c in enumerate(cams):
        lv = mic_levels(audio[c], sample_rate, frame_s)[:n]
        levels[i, :lv.size] = lv
    alpha = 1.0 - np.exp(-frame_s / ema_s)
    smooth = np.empty_like(levels)
    acc = levels[:, 0].copy()
    for k in range(n):
        acc += alpha * (levels[:, k] - acc)
        smooth[:, k] = acc
    program = int(np.argmax(smooth[:, 0])) if n else 0
    shots = [Shot(cams[program], 0.0, duration_s, "loudest")]
    challenger, since = -1, 0.0
    for k in range(n):
        t = k * frame_s
        top = int(np.argmax(smooth[:, k]))
        if top == program or smooth[top, k] - smooth[program, k] < margin_db:
            challenger = -1
            continue
        if top != challenger:
            challenger, since = top, t
        if t - since >= confirm_s - 1e-9 and t - shots[-1].start >= hold_s - 1e-9:
            shots[-1] = Shot(shots[-1].camera, shots[-1].start, t, shots[-1].reason)
            shots.append(Shot(cams[top], t, duration_s, "loudest"))
            program, challenger = top, -1
    return shots
