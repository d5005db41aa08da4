"""Rendering the program of recorded cameras: the compositor follows the director's cuts as they are made, and the
program audio follows the program camera (a short crossfade at each cut). Runs in its own thread beside analysis.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from .compositor import Compositor
from .media import SAMPLE_RATE, FrameCursor, Mp4Writer, usable_cores

log = logging.getLogger(__name__)


class Timeline:
    """The policy's cuts as they are made; the render thread follows behind, never ahead of a decision."""

    def __init__(self, lookback_s: float, audio_lead_s: float = 0.0):
        self.lookback_s = lookback_s  # how far back a later decision may still place a cut (and switch audio)
        self.audio_lead_s = audio_lead_s  # the program audio switches this long before the picture (J-cut)
        self.cuts: list[tuple[float, str, str, str]] = []  # (t, camera, transition, reason)
        self.scores: list[tuple[float, dict[str, float]]] = []  # (t, scores) per tick, for the tally overlay
        self.narration: list = []  # narration Utterances, placed at most `lookback_s` back in time
        self.duck_db = -14.0
        self.decided_until = -1e9
        self.done = False
        self.error: BaseException | None = None
        self._cv = threading.Condition()

    def add(self, t: float, d, scores: dict[str, float] | None = None, line=None) -> None:
        with self._cv:
            if line is not None:
                self.narration.append(line)
            if scores is not None:
                self.scores.append((t, scores))
            if d.cut:
                self.cuts.append((d.cut_time, d.to_camera, d.transition or "cut", d.reason))
            self.decided_until = t
            self._cv.notify_all()

    def finish(self) -> None:
        with self._cv:
            self.done = True
            self._cv.notify_all()

    def wait_for(self, t: float) -> None:
        """Block until the decision that governs time t exists (or analysis ended)."""
        with self._cv:
            # a later decision may place its cut back in time: stay that far behind the newest decision
            self._cv.wait_for(lambda: self.done or self.decided_until >= t + self.lookback_s)

    def run_guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            log.exception("render failed")


def render_program(cams: list["Camera"], timeline: Timeline, duration: float, path: Path, comp: Compositor,
                   progress) -> None:
    """Composite and encode the program, following `timeline`; audio follows the program camera with a 50 ms
    crossfade at each cut, with the timeline's narration mixed in over it (ducked)."""
    from .narration.mix import lines_near, mix_into_program

    fps = comp.config.fps
    by_id = {c.id: c for c in cams}
    cursors = {c.id: FrameCursor(c.path, comp.config.size) for c in cams}
    n_frames = int(duration * fps)
    spf = SAMPLE_RATE // fps
    fade = int(0.05 * SAMPLE_RATE)
    lead = timeline.audio_lead_s
    ci = si = ai = -1
    audio_cam = prev_audio_cam = None
    audio_cut_j = -(10 ** 9)
    try:
        # x264 beside the analysis: one encoding thread per 4 cores (x264's one-per-core frame threads only add
        # overhead when analysis has the other cores busy; superfast at 720p is far above real time on one)
        with Mp4Writer(path, comp.config.size, fps, threads=max(1, usable_cores() // 4)) as w:
            for i in range(n_frames):
                t = i / fps
                timeline.wait_for(t + max(0.0, lead))
                while ci + 1 < len(timeline.cuts) and timeline.cuts[ci + 1][0] <= t + 1e-9:
                    ci += 1
                    ct, cam, transition, reason = timeline.cuts[ci]
                    caption = reason.replace("_", " ") if comp.config.tally else ""  # the rule, in debug renders
                    comp.cut_to(cam, ct, transition if ci > 0 else "cut", caption=caption)
                # the program audio follows the picture's cuts, `lead` earlier (J-cut) or later (L-cut)
                while ai + 1 < len(timeline.cuts) and timeline.cuts[ai + 1][0] - (lead if ai >= 0 else 0.0) <= t + 1e-9:
                    ai += 1
                    prev_audio_cam, audio_cam = audio_cam, by_id.get(timeline.cuts[ai][1])
                    audio_cut_j = int(round((timeline.cuts[ai][0] - (lead if ai > 0 else 0.0)) * SAMPLE_RATE))
                if ci < 0:  # nothing decided yet at this time: black
                    w.write_frame(comp.compose(t, {}))
                    silence = np.zeros(spf, np.float32)
                    near = lines_near(timeline.narration, t - 1.0, t + 1.0)
                    w.write_audio(mix_into_program(silence, i * spf, SAMPLE_RATE, near, timeline.duck_db))
                    continue
                need = {comp.program}
                if comp.transition == "dissolve" and t - comp.cut_t < comp.config.dissolve_s:
                    need.add(comp.previous)
                frames = {cid: cursors[cid].frame_at(t - by_id[cid].offset) for cid in need if cid in by_id}
                while si + 1 < len(timeline.scores) and timeline.scores[si + 1][0] <= t + 1e-9:
                    si += 1
                w.write_frame(comp.compose(t, frames, timeline.scores[si][1] if si >= 0 else None))
                j0 = i * spf
                chunk = _audio(audio_cam, j0, j0 + spf)
                if prev_audio_cam is not None and j0 < audio_cut_j + fade:
                    r = np.clip((np.arange(j0, j0 + spf) - audio_cut_j) / fade, 0.0, 1.0).astype(np.float32)
                    chunk = chunk * r + _audio(prev_audio_cam, j0, j0 + spf) * (1 - r)
                if timeline.narration:
                    near = lines_near(timeline.narration, t - 1.0, t + 1.0)
                    chunk = mix_into_program(chunk, j0, SAMPLE_RATE, near, timeline.duck_db)
                w.write_audio(chunk)
                if i % fps == 0:
                    progress("render", i + 1, n_frames)
            progress("render", n_frames, n_frames)
    finally:
        for c in cursors.values():
            c.close()


def _audio(cam: "Camera | None", j0: int, j1: int) -> np.ndarray:
    """Samples [j0, j1) of the session clock from a camera's audio (silence outside its recording)."""
    out = np.zeros(j1 - j0, np.float32)
    if cam is None or not cam.has_audio:
        return out
    off = int(round(cam.offset * SAMPLE_RATE))
    a0, a1 = max(j0 - off, 0), min(j1 - off, cam.audio.size)
    if a1 > a0:
        out[a0 + off - j0:a1 + off - j0] = cam.audio[a0:a1]
    return out
