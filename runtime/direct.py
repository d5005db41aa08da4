"""`aiobs direct`: auto-edit N recorded cameras into a program, with the same analysis -> features -> ranker ->
policy core as the live director.

Pass 1 (analysis): every camera is sampled at the tick rate on one session clock (after alignment), analysed,
scored, and the policy decides; every feature row and decision goes to the feature log.
Pass 2 (render): the program camera's frames (and the outgoing one during a dissolve) are composited and encoded
with the program audio following the chosen camera.
Outputs in --out: program.mp4, cuts.edl, cuts.otio, report.html, report.json.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from features.extract import camera_tick_row, loudest, scene_matrix
from features.schema import CAMERA_TICKS, DECISIONS
from features.spool import FeatureLog
from ranker.baseline import WeightedBaselineRanker
from ranker.metrics import Shot, shots_from_decisions, summary
from ranker.policy import PolicyConfig, SwitchingPolicy, contexts

from .analysis.engine import AnalysisEngine
from .analysis.people import resolve_device
from .compositor import Compositor, CompositorConfig
from .media import SAMPLE_RATE, FrameCursor, MediaError, Mp4Writer, probe, read_audio

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


@dataclass
class DirectResult:
    out_dir: Path
    session_id: str
    duration_s: float
    shots: list[Shot]
    metrics: dict
    warnings: list[str]
    timings: dict


# -- inputs and alignment -------------------------------------------------------------------------------------------
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


def _onsets(x: np.ndarray, rate: int = 100) -> np.ndarray:
    """Onset strength at `rate` Hz: rises of the log energy envelope, normalised. Onsets (a word starting, a door
    closing) align recordings far better than raw loudness, which periodic music or room tone can dominate."""
    hop = SAMPLE_RATE // rate
    n = x.size // hop
    if n < 2:
        return np.zeros(0)
    e = np.log(np.sqrt(np.mean(np.square(x[:n * hop].reshape(n, hop)), axis=1) + 1e-12))
    d = np.maximum(0.0, np.diff(e, prepend=e[0]))
    return (d - d.mean()) / (d.std() + 1e-9)


def _best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag of b behind a in envelope steps, confidence = peak / best peak elsewhere)."""
    n = min(len(a), len(b))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(a[:n], size) * np.conj(np.fft.rfft(b[:n], size)), size)
    lags = np.r_[np.arange(0, n), np.arange(-n + 1, 0)]
    vals = np.r_[xc[:n], xc[size - n + 1:]]
    ok = np.abs(lags) <= max_lag
    lags, vals = lags[ok], vals[ok]
    i = int(np.argmax(vals))
    others = vals[np.abs(lags - lags[i]) > 20]
    second = float(others.max()) if others.size else 0.0
    return int(lags[i]), float(vals[i] / second) if second > 0 else float("inf")


def align_offsets(cams: list[Camera], max_lag_s: float = 10.0, min_confidence: float = 1.3
                  ) -> tuple[dict[str, float], list[str]]:
    """Session offsets from audio: every camera's onset envelope is cross-correlated with every camera already
    placed, and placed by its most confident match (~10 ms resolution). Cameras without audio, or whose best match
    is not confident, keep offset 0 and are reported."""
    env = {c.id: _onsets(c.audio) for c in cams if c.has_audio}
    env = {k: v for k, v in env.items() if len(v) >= 200}
    offsets = {c.id: 0.0 for c in cams}
    notes = []
    if not env:
        return offsets, notes
    placed = {next(iter(env)): 0.0}
    pending = [k for k in env if k not in placed]
    while pending:
        best = None
        for cid in pending:
            for anchor, off in placed.items():
                lag, conf = _best_lag(env[anchor], env[cid], int(max_lag_s * 100))
                if best is None or conf > best[2]:
                    best = (cid, off + lag / 100.0, conf)
        cid, off, conf = best
        pending.remove(cid)
        if conf < min_confidence:
            notes.append(f"{cid}: audio alignment not confident (peak ratio {conf:.2f}); offset 0 assumed")
            off = 0.0
        placed[cid] = off
    offsets.update(placed)
    base = min(offsets.values())
    return {k: round(v - base, 3) for k, v in offsets.items()}, notes


# -- the job --------------------------------------------------------------------------------------------------------
def direct(paths: list[str | Path], out_dir: str | Path, settings, *, offsets: dict[str, float] | None = None,
           truth: str | Path | None = None, ranker=None, policy: PolicyConfig | None = None,
           compositor: CompositorConfig | None = None, asr: bool = False, session_id: str | None = None,
           progress=None) -> DirectResult:
    t_job = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DirectError(f"cannot create output dir {out}: {e}") from e
    gt = json.loads(Path(truth).read_text()) if truth else None
    names = {Path(c["file"]).stem: c.get("name", Path(c["file"]).stem) for c in gt["cameras"]} if gt else None
    cams, warnings = open_inputs([Path(p) for p in paths], names)
    if offsets is None:
        found, notes = align_offsets(cams)
        warnings += notes
    else:
        found = {c.id: float(offsets.get(c.id, 0.0)) for c in cams}
    for c in cams:
        c.offset = found[c.id]
    duration = max(c.offset + c.duration for c in cams)
    session_id = session_id or f"direct-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    ranker = ranker or WeightedBaselineRanker()
    policy_cfg = policy or PolicyConfig()
    progress = progress or _Progress()

    # -- pass 1: analysis -> features -> ranker -> policy --------------------------------------------------------
    hz = settings.tick_hz
    ids = [c.id for c in cams]
    extra = {}
    if not settings.vision_hz and resolve_device(settings.device) == "cpu":
        extra["vision_every"] = max(1, round(hz / 1.0))  # CPU: people/faces at 1 Hz per camera, audio every tick
    engine = AnalysisEngine.from_settings(ids, settings, asr=asr, asr_sync=True, **extra)
    pol = SwitchingPolicy(policy_cfg, tick_s=1.0 / hz)
    cursors = {c.id: FrameCursor(c.path, (640, 360)) for c in cams}
    wall0 = time.time()
    ticks, decisions, score_rows = [], [], []
    n_ticks = int(np.floor(duration * hz))
    last_on: dict[str, float] = {}
    # pass 2 runs beside pass 1: the renderer follows the policy's decisions as they are made
    timeline = _Timeline(1.0 / hz)
    comp = Compositor(compositor or CompositorConfig(size=_even(cams[0].size)), {c.id: c.name for c in cams})
    renderer = threading.Thread(target=timeline.run_guarded, name="render",
                                args=(render_program, cams, timeline, duration, out / "program.mp4", comp, progress))
    renderer.start()
    t_analysis = time.perf_counter()
    try:
        with FeatureLog(settings.spool_dir, [CAMERA_TICKS, DECISIONS]) as flog:
            for k in range(n_ticks):
                t = k / hz
                for c in cams:
                    ft = t - c.offset
                    if 0 <= ft <= c.duration:
                        img = cursors[c.id].frame_at(ft)
                        if img is not None:
                            engine.submit_frame(c.id, t, img)
                    if c.has_audio:  # the audio of the tick that ends now: [t - 1/hz, t) on the session clock
                        i1 = int(round(ft * SAMPLE_RATE))
                        i0 = max(0, i1 - int(SAMPLE_RATE / hz))
                        if i1 > 0 and i0 < c.audio.size:
                            engine.submit_audio(c.id, c.offset + i0 / SAMPLE_RATE, c.audio[i0:i1])
                obs = engine.tick(t)
                ordered = [obs[i] for i in ids]
                x = scene_matrix(ordered)
                scores = ranker.score(x)
                score_map = {i: float(s) for i, s in zip(ids, scores)}
                ctx = contexts(ordered, t)
                for c in cams:  # a file that has not started or has ended is off the air now, not in 2 s
                    if not (0 <= t - c.offset <= c.duration - 0.1):
                        ctx[c.id] = replace(ctx[c.id], stale=True)
                d = pol.step(t, score_map, ctx)
                if d.cut and d.reason not in ("start",):
                    row = x[ids.index(d.to_camera)]
                    why = ", ".join(f"{f} {v:+.2f}" for f, v in ranker.explain(row))
                    if why:
                        d = _with_detail(d, f"{d.detail}; driven by {why}")
                decisions.append(d)
                timeline.add(t, d)
                score_rows.append(score_map)
                ticks.append(t)
                ts = wall0 + t
                top = loudest(ordered)
                if d.program:
                    last_on[d.program] = t
                for o in ordered:
                    flog.append("camera_ticks", camera_tick_row(
                        o, session_id=session_id, room="files", tick=k, ts=ts, loudest_dbfs=top,
                        on_program=(d.program == o.camera_id), since_on_program_s=t - last_on.get(o.camera_id, 0.0),
                        score=score_map[o.camera_id], model_version=ranker.version, ab_variant="files"))
                flog.append("decisions", d.log_row(session_id=session_id, room="files", ts=ts, tick=k,
                                                   model_version=ranker.version, ab_variant="files"))
                progress("analyse", k + 1, n_ticks)
    finally:
        timeline.finish()  # never leave the renderer waiting, even when analysis fails
    for c in cams:
        if cursors[c.id].error:
            warnings.append(cursors[c.id].error)
        cursors[c.id].close()
    engine.close()
    t_analysis = time.perf_counter() - t_analysis
    t_render = time.perf_counter()
    renderer.join()
    t_render = time.perf_counter() - t_render  # what rendering added after analysis finished
    if timeline.error is not None:
        raise DirectError(f"rendering program.mp4 failed: {timeline.error}") from timeline.error
    shots = shots_from_decisions(decisions, duration)
    if not shots:
        raise DirectError("no camera ever delivered a frame: nothing to put on program")

    # -- exports and report ------------------------------------------------------------------------------------------
    from .exports import write_edl, write_otio
    from .report import write_report

    lines = gt["speech"] if gt else None
    metrics = summary(shots, duration, lines)
    write_edl(out / "cuts.edl", shots, cams, fps=25)
    write_otio(out / "cuts.otio", shots, cams, fps=25)
    timings = {"analysis_s": round(t_analysis, 2), "render_tail_s": round(t_render, 2),
               "total_s": round(time.perf_counter() - t_job, 2), "duration_s": round(duration, 2),
               "x_realtime": round(duration / max(1e-9, time.perf_counter() - t_job), 2),
               "stage_ms": {k: round(v["mean"], 2) for k, v in engine.latency_summary().items()}}
    result = DirectResult(out, session_id, duration, shots, metrics, warnings, timings)
    write_report(out, result, cams, ticks, score_rows, decisions, lines, ranker.version, asdict(policy_cfg))
    ship = _ship_if_embedded(settings)
    if ship:
        warnings.append(ship)
    return result


def _with_detail(d, detail):
    return replace(d, detail=detail)


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] // 2 * 2, size[1] // 2 * 2)


class _Timeline:
    """The policy's cuts as they are made; the render thread follows behind, never ahead of a decision."""

    def __init__(self, tick_s: float):
        self.tick_s = tick_s
        self.cuts: list[tuple[float, str, str, str]] = []  # (t, camera, transition, reason)
        self.decided_until = -1e9
        self.done = False
        self.error: BaseException | None = None
        self._cv = threading.Condition()

    def add(self, t: float, d) -> None:
        with self._cv:
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
            # a later decision may place its cut up to one tick back: stay one tick behind the newest decision
            self._cv.wait_for(lambda: self.done or self.decided_until >= t + self.tick_s)

    def run_guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.error = e
            log.exception("render failed")


def render_program(cams: list[Camera], timeline: _Timeline, duration: float, path: Path, comp: Compositor,
                   progress, fps: int = 25) -> None:
    """Composite and encode the program, following `timeline`; audio follows the program camera with a 50 ms
    crossfade at each cut."""
    by_id = {c.id: c for c in cams}
    cursors = {c.id: FrameCursor(c.path, comp.config.size) for c in cams}
    n_frames = int(duration * fps)
    spf = SAMPLE_RATE // fps
    fade = int(0.05 * SAMPLE_RATE)
    ci = -1
    try:
        with Mp4Writer(path, comp.config.size, fps) as w:
            for i in range(n_frames):
                t = i / fps
                timeline.wait_for(t)
                while ci + 1 < len(timeline.cuts) and timeline.cuts[ci + 1][0] <= t + 1e-9:
                    ci += 1
                    ct, cam, transition, reason = timeline.cuts[ci]
                    caption = reason.replace("_", " ") if comp.config.tally else ""  # the rule, in debug renders
                    comp.cut_to(cam, ct, transition if ci > 0 else "cut", caption=caption)
                if ci < 0:  # nothing decided yet at this time: black
                    w.write_frame(comp.compose(t, {}))
                    w.write_audio(np.zeros(spf, np.float32))
                    continue
                need = {comp.program}
                if comp.transition == "dissolve" and t - comp.cut_t < comp.config.dissolve_s:
                    need.add(comp.previous)
                frames = {cid: cursors[cid].frame_at(t - by_id[cid].offset) for cid in need if cid in by_id}
                w.write_frame(comp.compose(t, frames))
                j0 = i * spf
                chunk = _audio(by_id.get(comp.program), j0, j0 + spf)
                cut_j = int(comp.cut_t * SAMPLE_RATE)
                if comp.previous and j0 < cut_j + fade:
                    r = np.clip((np.arange(j0, j0 + spf) - cut_j) / fade, 0.0, 1.0).astype(np.float32)
                    chunk = chunk * r + _audio(by_id.get(comp.previous), j0, j0 + spf) * (1 - r)
                w.write_audio(chunk)
                if i % fps == 0:
                    progress("render", i + 1, n_frames)
            progress("render", n_frames, n_frames)
    finally:
        for c in cursors.values():
            c.close()


def _audio(cam: Camera | None, j0: int, j1: int) -> np.ndarray:
    """Samples [j0, j1) of the session clock from a camera's audio (silence outside its recording)."""
    out = np.zeros(j1 - j0, np.float32)
    if cam is None or not cam.has_audio:
        return out
    off = int(round(cam.offset * SAMPLE_RATE))
    a0, a1 = max(j0 - off, 0), min(j1 - off, cam.audio.size)
    if a1 > a0:
        out[a0 + off - j0:a1 + off - j0] = cam.audio[a0:a1]
    return out


def _ship_if_embedded(settings) -> str | None:
    """In embedded mode the job owns the chDB path for a moment: ship the spool so the rows land in ClickHouse."""
    from features.shipper import SegmentShipper
    from features.store import FeatureStore

    if not settings.clickhouse_embedded:
        return None
    with FeatureStore(settings.clickhouse_dsn) as store:
        r = SegmentShipper(settings.spool_dir, store).ship_once()
    if r.error:
        return f"feature log stays spooled in {settings.spool_dir} ({r.error}); run `aiobs ingest` later"
    return None


class _Progress:
    """Progress on stderr: a refreshed line on a terminal, a line every 10% in a log."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.perf_counter()
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        pct = 100.0 * done / max(1, total)
        last = self.last.get(stage, -1.0)
        if done < total and (now - last < 0.5 if self.tty else pct // 10 == last // 10):
            return
        self.last[stage] = now if self.tty else pct
        if self.tty:
            self.stream.write(f"\r{stage:<8} {pct:5.1f}%  ({now - self.t0:5.1f} s)" + ("\n" if done >= total else ""))
        elif stage == "analyse" or done >= total:
            self.stream.write(f"{stage:<8} {pct:5.1f}%  ({now - self.t0:5.1f} s)\n")
        self.stream.flush()
