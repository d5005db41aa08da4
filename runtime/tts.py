"""Text to speech backends (narration, and the speakers of `aiobs sample`). Piper with the packaged voice is the
offline default; every backend returns mono float32 samples and their rate."""

from __future__ import annotations

import numpy as np

from runtime.models import resolve_piper_voice


class PiperTTS:
    def __init__(self, model_path: str | None = None, alignments: bool = False):
        from piper import PiperVoice

        # alignments: phoneme timings (patches the ONNX graph in memory; needs the onnx package)
        self.voice = PiperVoice.load(model_path or resolve_piper_voice().target, include_alignments=alignments)
        self.sample_rate = int(self.voice.config.sample_rate)
        self.alignments = alignments

    def synthesize(self, text: str, length_scale: float = 1.0, noise_scale: float | None = None) -> np.ndarray:
        """float32 mono at `self.sample_rate`; length_scale > 1 speaks slower."""
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale)
        parts = [c.audio_float_array for c in self.voice.synthesize(text, syn_config=cfg)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


    def synthesize_words(self, text: str, length_scale: float = 1.0) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
        """(samples, [(start_s, end_s, word)]): word times from Piper's phoneme alignments (spaces split words)."""
        from piper import SynthesisConfig

        if not self.alignments:
            raise RuntimeError("create PiperTTS(alignments=True) for word timings")
        parts, words, offset = [], [], 0
        tokens = [t.strip(".,!?;:\"'") for t in text.split()]
        tokens = [t for t in tokens if t]
        for chunk in self.voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale),
                                           include_alignments=True):
            pos, start = offset, None
            for a in chunk.phoneme_alignments or []:
                boundary = a.phoneme in (" ", "^", "$") or not a.phoneme.strip() or a.phoneme in ".,!?;:"
                if boundary and start is not None:
                    words.append([start / self.sample_rate, pos / self.sample_rate])
                    start = None
                elif not boundary and start is None:
                    start = pos
                pos += int(a.num_samples)
            if start is not None:
                words.append([start / self.sample_rate, pos / self.sample_rate])
            parts.append(chunk.audio_float_array)
            offset += len(chunk.audio_float_array)
        labels = tokens if len(tokens) == len(words) else [f"w{i}" for i in range(len(words))]
        audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        return audio, [(s, e, w) for (s, e), w in zip(words, labels)]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling (polyphase) between integer rates."""
    if rate_in == rate_out or x.size == 0:
        return x.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(x, rate_out // g, rate_in // g).astype(np.float32)
