"""Speech recognition on a sliding window (faster-whisper), with word times on the session clock.

`SpeechRecognizer` wraps one WhisperModel. `AsrStream` holds one camera's recent audio and words: the engine asks it
to re-transcribe its last `window_s` seconds every `hop_s` while the camera has speech, and reads keyword hits,
words/s and the word boundaries that make a cut safe.
"""

from __future__ import annotations

import re
import threading
from collections import deque

import numpy as np

from features.observations import Word
from runtime.media import SAMPLE_RATE
from runtime.models import ResolvedModel

_TOKEN = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


class SpeechRecognizer:
    def __init__(self, model: ResolvedModel, device: str = "auto", compute_type: str | None = None,
                 beam_size: int = 1, language: str | None = "en", cpu_threads: int = 1):
        from faster_whisper import WhisperModel

        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.resolved = model
        self.model = WhisperModel(model.target, device=device,
                                  compute_type=compute_type or ("float16" if device == "cuda" else "int8"),
                                  cpu_threads=cpu_threads)
        self.beam_size = beam_size
        self.language = language
        self._lock = threading.Lock()  # one transcription at a time per model

    def transcribe(self, samples: np.ndarray, t0: float = 0.0) -> list[Word]:
        """Words of `samples` (mono float32 16 kHz) with absolute times t0 + offset."""
        if samples.size < SAMPLE_RATE // 4:
            return []
        with self._lock:
            segments, _ = self.model.transcribe(
                samples.astype(np.float32), language=self.language, beam_size=self.beam_size, temperature=0.0,
                word_timestamps=True, vad_filter=True, condition_on_previous_text=False,
            )
            words = [Word(float(t0 + w.start), float(t0 + w.end), w.word.strip(), float(w.probability))
                     for s in segments for w in (s.words or []) if w.word.strip()]
        # monotonic by construction, even if a model emits an overlapping pair
        out: list[Word] = []
        for w in words:
            start = max(w.start, out[-1].end if out else w.start)
            out.append(Word(start, max(start, w.end), w.text, w.probability))
        return out


class AsrStream:
    """One camera's audio ring buffer and recognised words."""

    def __init__(self, keywords: list[str], window_s: float = 4.0, hop_s: float = 1.5, keep_s: float = 30.0):
        self.keywords = [normalise(k) for k in keywords if normalise(k)]
        self.window_s = window_s
        self.hop_s = hop_s
        self.keep_s = keep_s
        self._audio: deque[np.ndarray] = deque()
        self._audio_t0 = 0.0  # session time of the first buffered sample
        self._audio_len = 0
        self.words: list[Word] = []
        self._fresh: list[Word] = []  # recognised since the last take_fresh()
        self.last_run_t = -1e9
        self._lock = threading.Lock()

    # audio in -------------------------------------------------------------------------------------------------------
    def push(self, samples: np.ndarray, t: float) -> None:
        """Append samples that start at session time t."""
        with self._lock:
            if not self._audio:
                self._audio_t0 = t
            self._audio.append(samples.astype(np.float32))
            self._audio_len += samples.size
            max_len = int(self.window_s * 2 * SAMPLE_RATE)
            while self._audio_len - self._audio[0].size >= max_len:
                dropped = self._audio.popleft()
                self._audio_len -= dropped.size
                self._audio_t0 += dropped.size / SAMPLE_RATE

    def window(self) -> tuple[np.ndarray, float]:
        """(last window_s seconds of audio, its start time)."""
        with self._lock:
            if not self._audio:
                return np.zeros(0, dtype=np.float32), 0.0
            audio = np.concatenate(self._audio)
            t0 = self._audio_t0
        n = int(self.window_s * SAMPLE_RATE)
        if audio.size > n:
            t0 += (audio.size - n) / SAMPLE_RATE
            audio = audio[-n:]
        return audio, t0

    # recognition --------------------------------------------------------------------------------------------------
    def due(self, t: float) -> bool:
        return t - self.last_run_t >= self.hop_s

    def run(self, recognizer: SpeechRecognizer, t: float) -> list[Word]:
        audio, t0 = self.window()
        self.last_run_t = t
        new = recognizer.transcribe(audio, t0)
        with self._lock:
            # the newer transcript of [t0, end] replaces older guesses for that span (it has more context)
            self.words = [w for w in self.words if w.end <= t0 and w.end >= t - self.keep_s] + new
            self._fresh.extend(new)
        return new

    def take_fresh(self) -> tuple[Word, ...]:
        """The words recognised since the last call (a re-transcription may repeat a word with new times)."""
        with self._lock:
            out, self._fresh = tuple(self._fresh), []
        return out

    # reads ----------------------------------------------------------------------------------------------------------
    def recent(self, t: float, span_s: float) -> list[Word]:
        with self._lock:
            return [w for w in self.words if w.end > t - span_s and w.start <= t]

    def keyword_hits(self, t: float, span_s: float | None = None) -> int:
        span = self.window_s if span_s is None else span_s
        text = " " + " ".join(normalise(w.text) for w in self.recent(t, span)) + " "
        return sum(text.count(" " + k + " ") for k in self.keywords)

    def words_per_s(self, t: float, span_s: float | None = None) -> float:
        span = self.window_s if span_s is None else span_s
        return len(self.recent(t, span)) / span
