"""`aiobs direct`: auto-edit N recorded cameras into a program with the one director core (ranker/core.py).

Analysis: every camera is sampled at the tick rate on one session clock (after audio alignment, runtime/alignment.py),
analysed, and handed to the director core, which scores, decides and writes every feature-log row.
Rendering (runtime/render.py) runs beside it: the program camera's frames (and the outgoing one during a dissolve)
are composited and encoded with the program audio following the chosen camera.
Outputs in --out: program.mp4, cuts.edl, cuts.otio, report.html, report.json.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from features.extract import scene_matrix
from features.schema import TABLES
from features.spool import FeatureLog
from ranker.core import CameraTick, DirectorCore
from ranker.metrics import Shot, shots_from_decisions, summary
from ranker.policy import FILES_LOOKAHEAD_S, Override, PolicyConfig

from .alignment import align_offsets
from .analysis.engine import AnalysisEngine
from .compositor import Compositor, CompositorConfig
from .media import SAMPLE_RATE, FrameCursor
from .recorded import DirectError, open_inputs
from .render import Timeline, render_program

log = logging.getLogger(__name__)


__all__ = ["DirectError", "DirectResult", "direct"]


@dataclass
class DirectResult:
    out_dir: Path
    session_id: str
    duration_s: float
    shots: list[Shot]
    metrics: dict
    warnings: list[str]
    timings: dict


def read_operator_script(path: str | Path) -> list[tuple[float, Override]]:
    """An operator's actions on recorded footage, a JSON list of {"t": session seconds, "action": take|lock|release,
    "camera", "timeout_s", "operator"} (e.g. a human's cut list): what `aiobs direct --operator` obeys and logs as
    override events, the labels of the learned ranker. DirectError names the first bad item."""
    try:
        items = json.loads(Path(path).read_text())
        if not isinstance(items, list):
            raise ValueError("it is not a JSON list")
    except (OSError, ValueError) as e:
        raise DirectError(f"cannot read the operator script {path}: {e}") from None
    out = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError("an action is a JSON object")
            t = item.get("t")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t) or t < 0:
                raise ValueError(f"t must be a number of seconds >= 0, not {t!r}")
            msg = {k: v for k, v in item.items() if k != "t"}
            msg.setdefault("operator", "operator-script")  # the log names who directed
            out.append((float(t), Override.from_message(msg)))
        except ValueError as e:
            raise DirectError(f"operator script {path}, action {i}: {e}") from None
    return sorted(out, key=lambda x: x[0])


def direct(paths: list[str | Path], out_dir: str | Path, settings, *, offsets: dict[str, float] | None = None,
           truth: str | Path | None = None, ranker=None, policy: PolicyConfig | None = None,
           compositor: CompositorConfig | None = None, asr: bool = False, session_id: str | None = None,
           progress=None, operator: list[tuple[float, Override]] | None = None,
           synthetic: bool = False, narrate: bool = False) -> DirectResult:
    """`policy` defaults to the settings' policy; `compositor` without a size renders at the first input's size.
    `operator` = (session time, Override) actions (`read_operator_script`), obeyed at the first tick at or after
    their time and logged (a supervised session: its rows are labels for the learned ranker); `synthetic` marks the
    rows as not a human's (a scripted operator). `narrate`: the narrator (runtime/narration/) speaks into the
    program's pauses with the settings' voice; its lines go into report.json and as markers into cuts.otio."""
    t_job = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DirectError(f"cannot create output dir {out}: {e}") from e
    try:
        gt = json.loads(Path(truth).read_text()) if truth else None
        if gt is not None and not (isinstance(gt.get("speech"), list) and isinstance(gt.get("cameras"), list)):
            raise ValueError("it has no 'speech' and 'cameras' lists (as aiobs sample writes them)")
    except (OSError, ValueError, AttributeError) as e:
        raise DirectError(f"cannot use ground truth {truth}: {e}") from e
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
    script = list(operator or [])
    unknown = sorted({ov.camera for _, ov in script if ov.camera} - {c.id for c in cams})
    if unknown:
        raise DirectError(f"the operator script names camera(s) {unknown}; the inputs are {[c.id for c in cams]}")
    late = [t for t, _ in script if t > duration]
    if late:
        warnings.append(f"{len(late)} operator action(s) after the end of the media ({duration:.1f} s) are not used")
    policy_cfg = policy or settings.policy
    if policy_cfg.lookahead_s <= 0:  # files know the whole future: cuts are placed back in time, in pauses
        policy_cfg = replace(policy_cfg, lookahead_s=FILES_LOOKAHEAD_S)
    progress = progress or _Progress()

    # -- analysis -> director core (scores, policy, rows) ------------------------------------------------------------
    hz = settings.tick_hz
    ids = [c.id for c in cams]
    engine = AnalysisEngine.from_settings(ids, settings, asr=asr, asr_sync=True)
    cursors = {c.id: FrameCursor(c.path, (640, 360)) for c in cams}
    wall0 = time.time()
    ticks, decisions, score_rows, model_version = [], [], [], ""
    n_ticks = int(np.floor(duration * hz))
    # rendering runs beside analysis: the renderer follows the core's decisions as they are made
    # a decision may move a cut back by the lookahead, and a J-cut switches the audio before the picture
    lookback = max(1.0 / hz, policy_cfg.lookahead_s) + max(0.0, policy_cfg.audio_lead_s) + 1.0 / hz
    narrator = _narrator(settings, cams, hz) if narrate else None  # before any output: a bad writer fails here
    if narrator is not None:  # a line goes back into a pause the narrator has heard whole: render that far behind
        lookback = max(lookback, NARRATION_LOOKBACK_S + 2.0 / hz)
    timeline = Timeline(lookback, audio_lead_s=policy_cfg.audio_lead_s)
    timeline.duck_db = settings.narration_duck_db
    comp_cfg = compositor or CompositorConfig()
    if compositor is None or compositor.size is None:
        comp_cfg = replace(comp_cfg, size=_even(cams[0].size))
    comp = Compositor(comp_cfg, {c.id: c.name for c in cams})
    renderer = threading.Thread(target=timeline.run_guarded, name="render",
                                args=(render_program, cams, timeline, duration, out / "program.mp4", comp, progress))
    renderer.start()
    t_analysis = time.perf_counter()
    try:
        with FeatureLog(settings.spool_dir, TABLES.values()) as flog:
            core = DirectorCore(session_id, policy=policy_cfg, tick_s=1.0 / hz, rankers=ranker, variant="files",
                                room="files", sink=flog, synthetic=synthetic)
            if narrator is not None:
                narrator.bind(flog, session_id, "files", synthetic)
            if core.config != policy_cfg:
                log.info("direct: the model's learned policy timing applies: %s", {
                    k: v for k, v in asdict(core.config).items() if asdict(policy_cfg)[k] != v})
            for k in range(n_ticks):
                t = k / hz
                started = time.perf_counter()
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
                inputs = []
                for c, o, row in zip(cams, ordered, x):
                    cam_in = CameraTick.from_observation(o, row)
                    if not (0 <= t - c.offset <= c.duration - 0.1):  # a file not started or ended is off the air now
                        cam_in = replace(cam_in, stale=True)
                    inputs.append(cam_in)
                due = []
                while script and script[0][0] <= t + 1e-9:
                    due.append(script.pop(0)[1])
                r = core.tick(t, inputs, due, ts=wall0 + t, started=started)
                decisions.append(r.decision)
                model_version = r.model_version
                line = narrator.tick(t, ordered, r, ts=wall0 + t) if narrator is not None else None
                timeline.add(t, r.decision, r.scores if comp_cfg.tally else None, line)
                score_rows.append(r.scores)
                ticks.append(t)
                progress("analyse", k + 1, n_ticks)
    finally:
        timeline.finish()  # never leave the renderer waiting, even when analysis fails
        if narrator is not None:
            narrator.close()
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
    metrics = summary(shots, duration, lines, policy_cfg.audio_lead_s)
    lead = policy_cfg.audio_lead_s
    write_edl(out / "cuts.edl", shots, cams, fps=comp_cfg.fps, dissolve_s=comp_cfg.dissolve_s, audio_lead_s=lead)
    narration = narrator.summary() if narrator is not None else None
    if narration is not None and not narration["lines"]:
        from .narration.narrator import narration_outcomes

        warnings.append(f"narration aired no line ({narration_outcomes(narration['stats'])})")
    write_otio(out / "cuts.otio", shots, cams, fps=comp_cfg.fps, dissolve_s=comp_cfg.dissolve_s, audio_lead_s=lead,
               narration=narration["lines"] if narration else None)
    timings = {"analysis_s": round(t_analysis, 2), "render_tail_s": round(t_render, 2),
               "total_s": round(time.perf_counter() - t_job, 2), "duration_s": round(duration, 2),
               "x_realtime": round(duration / max(1e-9, time.perf_counter() - t_job), 2),
               "stage_ms": {k: round(v["mean"], 2) for k, v in engine.latency_summary().items()}}
    result = DirectResult(out, session_id, duration, shots, metrics, warnings, timings)
    # the configuration the session was directed under: the model's learned timing applied (what the log records)
    write_report(out, result, cams, ticks, score_rows, decisions, lines, model_version, asdict(core.config),
                 narration)
    ship = ship_if_embedded(settings)
    if ship:
        warnings.append(ship)
    return result


NARRATION_LOOKBACK_S = 4.0  # files: how far back the narrator may place a line (the renderer stays that far behind)


def _narrator(settings, cams, hz: float):
    """The narrator of a files session, or None (with a warning) when the settings have no voice."""
    from .narration import Narrator
    from .tts import build_tts

    tts = build_tts(settings, SAMPLE_RATE)
    if tts is None:
        log.warning("direct: --narrate with tts_backend=none: no narration")
        return None
    try:
        return Narrator.from_settings(settings, tts, names={c.id: c.name for c in cams},
                                      lookback_s=NARRATION_LOOKBACK_S, tick_s=1.0 / hz, synchronous=True)
    except ValueError as e:  # the writer hook cannot be loaded
        tts.close()
        raise DirectError(f"narration: {e}") from None


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return (size[0] // 2 * 2, size[1] // 2 * 2)


def ship_if_embedded(settings) -> str | None:
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
