"""Recorded camera files as director sources: probe, decode the audio once, report what cannot be used."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .media import MediaError, probe, read_audio

log = logging.getLogger(__name__)


class DirectError(RuntimeError):
    """The job cannot produce a program (no usable input, unwritable output); the message says why."""


@dataclass
class Camera:
    id: str
    path: Path
    name: str
    duration: float
    offset: float = 0.0  # session time at which the file's t=0 happens
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    has_audio: bool = True
    fps: float = 25.0
    size: tuple[int, int] = (640, 360)


def open_inputs(paths: list[Path], names: dict[str, str] | None = None) -> tuple[list[Camera], list[str]]:
    cams, warnings = [], []
    for i, p in enumerate(paths):
        cid = Path(p).stem if Path(p).stem not in [c.id for c in cams] else f"{Path(p).stem}-{i + 1}"
        try:
            info = probe(p)
            audio = read_audio(p) if info.has_audio else np.zeros(0, np.float32)
        except MediaError as e:
            warnings.append(f"skipping {p}: {e}")
            log.error("direct: skipping %s: %s", p, e)
            continue
        if info.duration <= 0:
            warnings.append(f"skipping {p}: no decodable video")
            continue
        cam = Camera(cid, Path(p), (names or {}).get(cid, cid), info.duration, audio=audio,
                     has_audio=audio.size > 0, fps=info.fps, size=(info.width, info.height))
        if not cam.has_audio:
            warnings.append(f"{cid}: no audio track; its speech features stay empty and alignment uses offset 0")
        cams.append(cam)
    if not cams:
        raise DirectError("none of the inputs is a readable video: " + "; ".join(warnings))
    longest = max(c.duration for c in cams)
    for c in cams:
        if c.duration < longest - 1.0:
            warnings.append(f"{c.id} is {c.duration:.1f} s, shorter than the longest input ({longest:.1f} s): "
                            f"it goes stale when it ends")
    return cams, warnings
