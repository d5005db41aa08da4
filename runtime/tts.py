"""Text to speech providers (narration, and the speakers of `aiobs sample`).

- `PiperTTS`: the packaged Piper voice, offline, on the CPU.
- `ElevenLabsTTS`: ElevenLabs through its official SDK (streamed PCM; key, voice, model and base URL from settings).
- `FallbackTTS`: providers in order of preference, like LiveKit Agents' fallback adapter. A provider that fails
  `failures_to_open` times in a row is marked unavailable (its circuit breaker opens) and a background probe
  brings it back once it answers again. An utterance always comes whole from one provider: a stream that fails
  half-way is thrown away and the whole line is spoken by the next one, so no line is ever cut in two or spoken
  in two voices. Every provider's audio is resampled to the adapter's one rate.

Every provider's `speak(text) -> Speech` returns mono float32 samples, their rate, and how long the first audio
took.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from runtime.models import resolve_piper_voice

log = logging.getLogger(__name__)


class TTSError(RuntimeError):
    """A provider (or every provider of a fallback) could not speak a line."""


@dataclass
class Speech:
    samples: np.ndarray  # mono float32
    rate: int
    provider: str
    first_audio_s: float  # from the request to the first audio
    total_s: float  # from the request to the whole utterance

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.rate


class PiperTTS:
    name = "piper"

    def __init__(self, model_path: str | None = None, alignments: bool = False, seed: int | None = 0):
        import onnxruntime
        from piper import PiperVoice

        # Piper's VITS graph draws its phoneme durations and voice noise with ONNX Runtime's random ops, whose
        # generators are seeded when the session is built: seeded, the same lines in the same order sound (and last)
        # the same, so a files run is reproducible (an unseeded line's length varies ~3% run to run, and with it
        # which pause a narration line fits). Process-wide, like the random ops it seeds; None leaves it alone.
        if seed is not None:
            onnxruntime.set_seed(int(seed))
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

    def speak(self, text: str) -> Speech:
        t0 = time.perf_counter()
        parts, first = [], None
        for chunk in self.voice.synthesize(text):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(chunk.audio_float_array)
        if not parts:
            raise TTSError(f"piper produced no audio for {len(text)} characters")
        return Speech(np.concatenate(parts).astype(np.float32), self.sample_rate, self.name, first,
                      time.perf_counter() - t0)

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


class ElevenLabsTTS:
    """ElevenLabs text to speech through the official SDK's streaming call (POST /v1/text-to-speech/{voice}/stream,
    raw 16-bit PCM). The SDK's own retries are off: the fallback adapter decides what a failure means. A stream
    that stalls for `timeout_s` (no bytes) or runs past `deadline_s` in all fails the utterance."""

    name = "elevenlabs"

    def __init__(self, api_key: str, voice_id: str, model_id: str, base_url: str = "", timeout_s: float = 4.0,
                 deadline_s: float = 10.0, rate: int = 16_000):
        from elevenlabs.client import ElevenLabs

        if not api_key:
            raise TTSError("ElevenLabs needs an API key (setting elevenlabs_api_key)")
        self.voice_id, self.model_id, self.rate = voice_id, model_id, rate
        self.deadline_s = deadline_s
        self.client = ElevenLabs(api_key=api_key, base_url=base_url.rstrip("/") or None, timeout=timeout_s)

    def speak(self, text: str) -> Speech:
        t0 = time.perf_counter()
        chunks, first = [], None
        try:
            stream = self.client.text_to_speech.stream(
                self.voice_id, text=text, model_id=self.model_id, output_format=f"pcm_{self.rate}",
                request_options={"max_retries": 0})
            for chunk in stream:
                if first is None:
                    first = time.perf_counter() - t0
                chunks.append(chunk)
                if time.perf_counter() - t0 > self.deadline_s:
                    raise TTSError(f"the stream ran past its {self.deadline_s:.0f} s deadline")
        except TTSError:
            raise
        except Exception as e:  # noqa: BLE001 - the SDK's ApiError (429, 5xx), httpx timeouts and broken streams
            raise TTSError(f"elevenlabs: {_describe(e)}") from e
        pcm = b"".join(chunks)
        if len(pcm) < 2:
            raise TTSError("elevenlabs: the stream held no audio")
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        return Speech(samples, self.rate, self.name, first or 0.0, time.perf_counter() - t0)


def _describe(e: BaseException) -> str:
    code = getattr(e, "status_code", None)
    return f"HTTP {code}" if code else f"{type(e).__name__}: {e}"[:200]


@dataclass
class ProviderState:
    name: str
    available: bool = True
    failures: int = 0  # in a row
    opened: int = 0  # how often its breaker opened
    recovered: int = 0
    last_error: str = ""
    errors: list[str] = field(default_factory=list)


class FallbackTTS:
    """Speak with the first available provider; on failure, the whole line goes to the next one."""

    name = "fallback"

    def __init__(self, providers: list, rate: int, failures_to_open: int = 3, probe_interval_s: float = 30.0,
                 probe_text: str = "Check."):
        if not providers:
            raise ValueError("FallbackTTS needs at least one provider")
        self.providers = list(providers)
        self.rate = rate
        self.failures_to_open = max(1, failures_to_open)
        self.probe_interval_s = probe_interval_s
        self.probe_text = probe_text
        self.state = {p.name: ProviderState(p.name) for p in self.providers}
        self.switches = 0  # utterances spoken by another provider than the one before
        self.last_provider = ""
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._probes: dict[str, threading.Thread] = {}

    def speak(self, text: str) -> Speech:
        t0 = time.perf_counter()
        with self._lock:
            order = [p for p in self.providers if self.state[p.name].available] or list(self.providers)
        errors = []
        for p in order:
            try:
                s = p.speak(text)
            except Exception as e:  # noqa: BLE001 - any provider failure moves the line to the next provider
                errors.append(f"{p.name}: {e}")
                self._failed(p, e)
                continue
            with self._lock:
                st = self.state[p.name]
                st.failures = 0
                if self.last_provider and p.name != self.last_provider:
                    self.switches += 1
                    log.info("tts: now speaking with %s", p.name)
                self.last_provider = p.name
            samples = resample(s.samples, s.rate, self.rate)
            return Speech(samples, self.rate, p.name, s.first_audio_s + (time.perf_counter() - t0 - s.total_s),
                          time.perf_counter() - t0)
        raise TTSError("no TTS provider could speak the line: " + "; ".join(errors))

    def _failed(self, p, e: BaseException) -> None:
        with self._lock:
            st = self.state[p.name]
            st.failures += 1
            st.last_error = str(e)[:200]
            st.errors.append(st.last_error)
            del st.errors[:-20]
            if st.available and st.failures >= self.failures_to_open:
                st.available = False
                st.opened += 1
                log.warning("tts: %s failed %d times in a row (%s): unavailable until a probe succeeds", p.name,
                            st.failures, st.last_error)
                if not self._closed.is_set():
                    th = threading.Thread(target=self._probe, args=(p,), name=f"tts-probe-{p.name}", daemon=True)
                    self._probes[p.name] = th
                    th.start()
            else:
                log.warning("tts: %s failed (%s)", p.name, st.last_error)

    def _probe(self, p) -> None:
        """Background: try the provider every `probe_interval_s` until it answers, then mark it available."""
        st = self.state[p.name]
        while not self._closed.wait(self.probe_interval_s):
            try:
                p.speak(self.probe_text)
            except Exception as e:  # noqa: BLE001 - still down
                log.info("tts: %s probe failed (%s)", p.name, _describe(e))
                continue
            with self._lock:
                st.available, st.failures = True, 0
                st.recovered += 1
            log.info("tts: %s answers again: available", p.name)
            return

    def status(self) -> dict:
        with self._lock:
            return {n: {"available": s.available, "failures": s.failures, "opened": s.opened,
                        "recovered": s.recovered, "last_error": s.last_error} for n, s in self.state.items()}

    def close(self) -> None:
        self._closed.set()


def build_tts(settings, rate: int) -> FallbackTTS | None:
    """The narration voice the settings ask for: ElevenLabs with Piper as its offline fallback, Piper alone, or none.
    A provider that cannot even be built (no API key) is left out with a warning; Piper always remains."""
    if settings.tts_backend == "none":
        return None
    providers = []
    if settings.tts_backend == "elevenlabs":
        try:
            providers.append(ElevenLabsTTS(settings.elevenlabs_api_key.get_secret_value(), settings.elevenlabs_voice_id,
                                           settings.elevenlabs_model_id, settings.elevenlabs_base_url,
                                           timeout_s=settings.elevenlabs_timeout_s))
        except TTSError as e:
            log.warning("tts: ElevenLabs left out (%s); narrating with Piper", e)
    providers.append(PiperTTS())
    return FallbackTTS(providers, rate, failures_to_open=settings.tts_failures_to_open,
                       probe_interval_s=settings.tts_probe_interval_s)
