"""Recorded-file I/O (PyAV): probe, frames at a sampling rate, audio at 16 kHz mono, an H.264 + AAC writer."""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

SAMPLE_RATE = 16_000  # analysis audio: mono float32 at 16 kHz (what VAD and Whisper take)


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class MediaError(RuntimeError):
    """A media file is missing, unreadable or corrupt; the message names the file and the problem."""


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
    """(t, RGB frame) sampled at `fps` from `start` (file time): the frame showing at each sample time.

    Frames between samples are decoded and dropped (latest-frame semantics, never a queue of stale frames).
    A file that turns corrupt mid-way raises MediaError after the frames it could decode.
    """
    cursor = FrameCursor(path, size)
    try:
        k = 0
        while True:
            t = start + k / fps
            frame = cursor.frame_at(t)
            if frame is None:
                if cursor.error:
                    raise MediaError(cursor.error)
                if cursor.ended:
                    return
            else:
                yield t - start, frame
            k += 1
    finally:
        cursor.close()


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


class Mp4Writer:
    """H.264 + AAC writer (PyAV). Video frames are RGB uint8; audio is mono float32 pushed in any chunk size."""

    def __init__(self, path: str | Path, size: tuple[int, int], fps: int = 25, sample_rate: int | None = SAMPLE_RATE,
                 crf: int = 26, preset: str = "superfast", threads: int = 0):
        """`threads`: x264 threads (0 = one per core, its default); a writer beside other work may want fewer."""
        import av

        self.path = Path(path)
        self.container = av.open(str(self.path), mode="w")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset, **({"threads": str(threads)} if threads else {})}
        self.audio = None
        if sample_rate:
            self.audio = self.container.add_stream("aac", rate=sample_rate)
            self.audio.layout = "mono"
            self._sr = sample_rate
            self._pending = np.zeros(0, np.float32)
            self._samples_out = 0
        self._frames = 0

    def write_frame(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._frames
        self._frames += 1
        for packet in self.video.encode(frame):
            self.container.mux(packet)

    def write_audio(self, samples: np.ndarray) -> None:
        import av

        if self.audio is None:
            return
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        n = 1024  # AAC frame size
        while self._pending.size >= n:
            chunk, self._pending = self._pending[:n], self._pending[n:]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
            frame.sample_rate = self._sr
            frame.pts = self._samples_out
            self._samples_out += n
            for packet in self.audio.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        if self.audio is not None and self._pending.size:
            self.write_audio(np.zeros(1024 - self._pending.size % 1024, np.float32))
        for stream in (self.video, self.audio):
            if stream is not None:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Decoder:
    """Decodes one video stream ahead of its reader on its own thread (FFmpeg demuxes, decodes and converts without
    the GIL), at most `depth` frames ahead, so a reader that also analyses or encodes never waits on the decoder.

    `get()` returns the next (t, av frame) in file order, or None at the end (or after a decoding error, kept in
    `error`). The thread holds the container until `stop()`; nothing else may touch it meanwhile."""

    def __init__(self, container, stream, name: str, depth: int):
        import av

        self._cv = threading.Condition()
        self._q: deque = deque()
        self._depth = max(1, depth)
        self._stop = False
        self._done = False
        self.error: str | None = None
        self._av_error = av.error.FFmpegError
        self._thread = threading.Thread(target=self._run, args=(container, stream, name), name=f"decode-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self, container, stream, name: str) -> None:
        try:
            for f in container.decode(stream):
                if f.pts is None:
                    continue
                item = (float(f.pts * f.time_base), f)
                with self._cv:
                    while len(self._q) >= self._depth and not self._stop:
                        self._cv.wait()
                    if self._stop:
                        return
                    self._q.append(item)
                    self._cv.notify_all()
        except self._av_error as e:  # corrupt mid-way: the camera ends here, with the reason kept
            self.error = f"{name}: decoding failed ({e})"
        except Exception as e:  # noqa: BLE001 - the reader sees the end of the file, with the reason
            self.error = f"{name}: decoding failed ({type(e).__name__}: {e})"
        finally:
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def get(self):
        with self._cv:
            while not self._q and not self._done:
                self._cv.wait()
            if not self._q:
                return None
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._q.clear()
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()


PREFETCH_BYTES = 8 << 20  # decoded frames a cursor may hold ahead of its reader (per cursor)


class FrameCursor:
    """Random-forward access to a video file: `frame_at(t)` is the RGB frame showing at file time t.

    Decodes sequentially, on a thread of its own a few frames ahead of the reader, and converts to RGB only the
    frames asked for, so a camera that is not on program costs only its decode. Returns None before the first frame
    and after the end of the file (a camera that stopped).
    """

    def __init__(self, path: str | Path, size: tuple[int, int] | None = None):
        self.path = Path(path)
        self.size = size
        self._container = _open(path)
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(f"{path}: has no video stream")
        stream = self._container.streams.video[0]
        cc = stream.codec_context
        if (cc.width or 0) * (cc.height or 0) <= 1280 * 720:
            # the cursor's own thread decodes already: FFmpeg's frame threads would only add latency and overhead
            cc.thread_count = 1
        else:  # big frames: let FFmpeg spread the decoding too
            stream.thread_type = "AUTO"
        frame_bytes = max(1, (cc.width or 640) * (cc.height or 360) * 3 // 2)
        self._decoder = _Decoder(self._container, stream, self.path.name, min(16, max(2, PREFETCH_BYTES // frame_bytes)))
        self._cur = None  # (t, av frame)
        self._next = None
        self._cache: tuple[float, np.ndarray] | None = None
        self.ended = False
        self.end_t = float("inf")
        self._closed = False

    @property
    def error(self) -> str | None:
        return self._decoder.error

    def _pull(self):
        return self._decoder.get()

    def frame_at(self, t: float) -> np.ndarray | None:
        if self.ended and (self._cur is None or t > self.end_t):
            return None
        if self._next is None and not self.ended:
            self._next = self._pull()
            if self._next is None:
                self.ended = True
        while self._next is not None and self._next[0] <= t + 1e-6:
            self._cur = self._next
            self._next = self._pull()
            if self._next is None:
                self.ended = True
                self.end_t = self._cur[0] + 0.1
        if self._cur is None or (self.ended and t > self.end_t):
            return None
        if self._cache is None or self._cache[0] != self._cur[0]:
            self._cache = (self._cur[0], _to_rgb(self._cur[1], self.size))
        return self._cache[1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._decoder.stop()
        self._cur = self._next = None
        self._container.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
