"""Audio level and voice activity for one camera's audio (mono float32 at 16 kHz)."""

from __future__ import annotations

import numpy as np

from runtime.media import SAMPLE_RATE
from runtime.models import silero_vad_path

VAD_CHUNK = 512  # Silero's window at 16 kHz (32 ms)


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (full-scale sine = -3 dBFS); -120 for silence or no samples."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20.0 * np.log10(rms)) if rms > 0 else -120.0


class VoiceActivity:
    """Silero VAD (the ONNX model faster-whisper ships), run on the audio of each tick."""

    def __init__(self):
        from faster_whisper.vad import SileroVADModel

        self.model = SileroVADModel(str(silero_vad_path()))

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability per 32 ms chunk of `samples` (zero-padded to whole chunks)."""
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        pad = (-samples.size) % VAD_CHUNK
        x = np.pad(samples.astype(np.float32), (0, pad)) if pad else samples.astype(np.float32)
        return np.asarray(self.model(x), dtype=np.float32).reshape(-1)

    def speech_segments(self, samples: np.ndarray, threshold: float = 0.5, min_silence_s: float = 0.1,
                        min_speech_s: float = 0.1) -> list[tuple[float, float]]:
        """(start, end) seconds of speech within `samples`, by hysteresis over the chunk probabilities."""
        p = self.probabilities(samples)
        dt = VAD_CHUNK / SAMPLE_RATE
        segs, start, silent = [], None, 0
        for i, prob in enumerate(p):
            if prob >= threshold:
                if start is None:
                    start = i
                silent = 0
            elif start is not None:
                silent += 1
                if silent * dt >= min_silence_s:
                    end = i - silent + 1
                    if (end - start) * dt >= min_speech_s:
                        segs.append((start * dt, end * dt))
                    start, silent = None, 0
        if start is not None and (len(p) - start) * dt >= min_speech_s:
            segs.append((start * dt, len(p) * dt))
        return segs
