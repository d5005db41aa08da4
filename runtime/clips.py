"""Clips of the moments a model's program and the human's differ, cut from the recorded camera files.

A session directed from files (`aiobs direct ... --out DIR`) keeps `DIR/report.json`: its session id and each
camera's file and offset on the session clock. Given a disagreement (session time `start`..`end`, the human's camera,
the program's camera; `ranker.evaluate.replay(...).disagreements`), `disagreement_clip` writes a side-by-side MP4
(human left, model right, a second of context either side) and a PNG strip of three stills (start, middle, end) to
look at in a notebook. Simulated sessions have no media: `find_reports` simply does not list them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .media import FrameCursor, MediaError, Mp4Writer

PANEL = (320, 180)  # each camera's picture in a clip


def find_reports(root: str | Path) -> dict[str, Path]:
    """session id -> report.json for every directed session under `root` (searched recursively; the newest wins)."""
    found: dict[str, Path] = {}
    root = Path(root)
    if not root.is_dir():
        return found
    for p in sorted(root.rglob("report.json"), key=lambda p: p.stat().st_mtime):
        try:
            sid = json.loads(p.read_text()).get("session_id")
        except (OSError, ValueError):
            continue
        if sid:
            found[str(sid)] = p
    return found


def _media_path(file: str, report: Path) -> Path:
    """A camera file as the report names it: absolute (what `aiobs direct` writes), or relative to where `direct`
    ran (older reports), tried from here and from the report's folder."""
    p = Path(file)
    for candidate in ([p] if p.is_absolute() else [p, report.parent / p, report.parent.parent / p]):
        if candidate.is_file():
            return candidate
    raise MediaError(f"{report}: camera file {file} not found" + ("" if p.is_absolute() else
                     f" (relative: tried from {Path.cwd()} and from {report.parent})"))


def _label(img: np.ndarray, text: str, colour) -> np.ndarray:
    import cv2

    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return out


def disagreement_clip(report: str | Path, start: float, end: float, human: str, program: str, out_dir: str | Path,
                      context_s: float = 1.0, fps: int = 10) -> dict:
    """Write `<session>-<start>s.mp4` (side by side: the human's camera, the model's camera, session time stamped)
    and `<session>-<start>s.png` (three stills of both) into `out_dir`. Returns their paths and the clip's span.
    Raises MediaError when a camera is not in the report or its file cannot be read."""
    import cv2

    rep = json.loads(Path(report).read_text())
    cams = {c["id"]: c for c in rep.get("cameras", [])}
    for cam in (human, program):
        if cam not in cams:
            raise MediaError(f"{report}: camera {cam!r} is not one of {sorted(cams)}")
    sid = rep.get("session_id", Path(report).parent.name)
    duration = float(rep.get("duration_s") or 0.0)
    start, end = float(start), float(end)
    if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start or (duration and start >= duration):
        raise ValueError(f"{report}: the moment {start:g}..{end:g} s is not a span inside session {sid} "
                         f"(0..{duration:.1f} s)")
    t0 = max(0.0, start - context_s)
    t1 = min(duration or end + context_s, end + context_s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{sid}-{start:.1f}s"
    cursors = {cam: FrameCursor(_media_path(cams[cam]["file"], Path(report)), PANEL) for cam in (human, program)}
    blank = np.zeros((PANEL[1], PANEL[0], 3), np.uint8)

    def picture(cam: str, t: float) -> np.ndarray:
        frame = cursors[cam].frame_at(t - float(cams[cam].get("offset_s", 0.0)))
        if frame is None and cursors[cam].error:
            raise MediaError(cursors[cam].error)
        return blank if frame is None else frame

    def pair(t: float) -> np.ndarray:
        inside = start <= t < end
        left = _label(picture(human, t), f"human: {human}  t={t:.1f}s", (255, 255, 255))
        right = _label(picture(program, t), f"model: {program}", (255, 80, 80) if inside else (255, 255, 255))
        return np.concatenate([left, right], axis=1)

    stills_at = [start, (start + end) / 2, max(start, end - 1.0 / fps)]
    stills: list[np.ndarray] = []
    writer = Mp4Writer(out / f"{stem}.mp4", (2 * PANEL[0], PANEL[1]), fps=fps, sample_rate=None, threads=1)
    try:
        k = 0
        while t0 + k / fps < t1:
            t = t0 + k / fps
            frame = pair(t)
            writer.write_frame(frame)
            while stills_at and t + 1e-9 >= stills_at[0] - 0.5 / fps:
                stills.append(frame)
                stills_at.pop(0)
            k += 1
    finally:
        writer.close()
        for c in cursors.values():
            c.close()
    while len(stills) < 3:
        stills.append(stills[-1] if stills else np.concatenate([blank, blank], axis=1))
    png = out / f"{stem}.png"
    cv2.imwrite(str(png), cv2.cvtColor(np.concatenate(stills, axis=0), cv2.COLOR_RGB2BGR))
    return {"session": sid, "mp4": str(out / f"{stem}.mp4"), "png": str(png), "start": t0, "end": t1,
            "human": human, "program": program, "frames": k}
