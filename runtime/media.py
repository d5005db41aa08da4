"""Media types and recorded-file I/O (PyAV). Live LiveKit tracks produce the same `VideoFrame` / `AudioChunk`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16_000  # analysis audio: mono float32 at 16 kHz (what VAD and Whisper take)


class MediaError(RuntimeError):
    """A media file is missing, unreadable or corrupt; the message names the file and the problem."""


@dataclass(frozen=True)
class VideoFrame:
    camera_id: str
    t: float  # seconds on the session clock
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class AudioChunk:
    camera_id: str
    t: float  # start time on the session clock
    samples: np.ndarray  # float32 mono in [-1, 1] at SAMPLE_RATE


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    duration: float
    width: int
    height: int
    fps: float
    has_audio: bool


def _open(path: str | Path):
    import av

    p = Path(path)
    if not p.is_file():
        raise MediaError(f"{p}: no such file")
    try:
        return av.open(str(p))
    except av.error.FFmpegError as e:  # InvalidDataError and friends
        raise MediaError(f"{p}: not a readable media file ({e})") from e


def probe(path: str | Path) -> MediaInfo:
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: has no video stream")
        v = c.streams.video[0]
        duration = None
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        fps = float(v.average_rate or v.guessed_rate or 0) or 25.0
        if not duration:
            duration = (v.frames or 0) / fps
        return MediaInfo(Path(path), float(duration or 0.0), v.codec_context.width, v.codec_context.height, fps,
                         bool(c.streams.audio))


def iter_frames(path: str | Path, fps: float, size: tuple[int, int] | None = None,
                start: float = 0.0) -> Iterator[tuple[float, np.ndarray]]:
    """(t, RGB frame) sampled at `fps` from `start` (file time): the latest decoded frame at each sample time.

    Frames between samples are decoded and dropped (latest-frame semantics, never a queue of stale frames).
    A file that turns corrupt mid-way raises MediaError after the frames it could decode.
    """
    import av

    step = 1.0 / fps
    next_t = start
    last, last_t, last_rgb = None, 0.0, None
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: has no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in c.decode(stream):
                if frame.pts is None:
                    continue
                ft = float(frame.pts * frame.time_base)
                while last is not None and next_t < ft - 1e-6:  # sample times before this frame show the last one
                    if last_rgb is None:
                        last_rgb = _to_rgb(last, size)
                    yield next_t - start, last_rgb
                    next_t += step
                last, last_t, last_rgb = frame, ft, None
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed at {next_t:.2f} s ({e})") from e
        if last is not None and next_t <= last_t + 1e-6:
            yield next_t - start, _to_rgb(last, size)


def _to_rgb(frame, size):
    if size is not None:
        return frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
    return frame.to_ndarray(format="rgb24")


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The file's first audio stream as float32 mono at `sample_rate`; empty when the file has no audio."""
    import av

    with _open(path) as c:
        if not c.streams.audio:
            return np.zeros(0, dtype=np.float32)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = []
        try:
            for frame in c.decode(c.streams.audio[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: audio decoding failed ({e})") from e
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    import wave

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
