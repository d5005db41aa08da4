"""Text to speech backends (narration, and the speakers of `aiobs sample`). Piper with the packaged voice is the
offline default; every backend returns mono float32 samples and their rate."""

from __future__ import annotations

import numpy as np

from runtime.models import resolve_piper_voice


class PiperTTS:
    def __init__(self, model_path: str | None = None):
        from piper import PiperVoice

        self.voice = PiperVoice.load(model_path or resolve_piper_voice().target)
        self.sample_rate = int(self.voice.config.sample_rate)

    def synthesize(self, text: str, length_scale: float = 1.0, noise_scale: float | None = None) -> np.ndarray:
        """float32 mono at `self.sample_rate`; length_scale > 1 speaks slower."""
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale)
        parts = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling (polyphase) between integer rates."""
    if rate_in == rate_out or x.size == 0:
        return x.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)
