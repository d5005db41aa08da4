"""report.json + report.html for a directed program: metrics, timeline of scores and cuts, shot lengths, reasons."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .narration.narrator import narration_outcomes


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(out: Path, result, cams, ticks, score_rows, decisions, lines, model_version: str,
                 policy: dict, narration: dict | None = None) -> None:
    cuts = [{"t": round(s.start, 3), "from": prev.camera, "to": s.camera, "reason": s.reason,
             "transition": s.transition}
            for prev, s in zip(result.shots, result.shots[1:])]
    reasons = Counter(d.reason for d in decisions)
    report = {
        "session_id": result.session_id,
        **result.metrics,
        "duration_s": round(result.duration_s, 3),
        "cameras": [{"id": c.id, "name": c.name, "file": str(Path(c.path).resolve()), "offset_s": c.offset,
                     "duration_s": round(c.duration, 3), "has_audio": c.has_audio} for c in cams],
        "shots": [{"camera": s.camera, "start": round(s.start, 3), "end": round(s.end, 3), "reason": s.reason,
                   "transition": s.transition} for s in result.shots],
        "cut_list": cuts,
        "decision_reasons": dict(reasons),
        "model_version": model_version,
        "policy": policy,
        "warnings": result.warnings,
        "timings": result.timings,
    }
    if narration is not None:
        report["narration"] = narration
    (out / "report.json").write_text(json.dumps(report, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [c.id for c in cams]
    colours = {cid: plt.cm.tab10(i % 10) for i, cid in enumerate(ids)}
    fig, ax = plt.subplots(figsize=(13, 4.2))
    t = np.asarray(ticks)
    for cid in ids:
        ax.plot(t, [r.get(cid, np.nan) for r in score_rows], lw=1.1, color=colours[cid], label=cid)
    for s in result.shots:
        ax.axvspan(s.start, s.end, ymin=0.0, ymax=0.05, color=colours.get(s.camera, "grey"))
    for c in cuts:
        ax.axvline(c["t"], color="black", lw=0.6, ls=":")
    for n in (narration or {}).get("lines", []):
        ax.axvspan(n["start"], n["end"], ymin=0.06, ymax=0.11, color="purple")
    if lines:
        for line in lines:
            ax.axvspan(line["start"], line["end"], ymin=0.95, ymax=1.0, color=colours.get(line["camera"], "grey"))
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("ranker score")
    ax.set_title("Scores per camera; bottom band = program, purple = narration, top band = who speaks (ground "
                 "truth); dotted = cuts")
    ax.legend(ncol=len(ids), fontsize=8, loc="upper right")
    timeline = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([s.duration for s in result.shots], bins=min(20, max(3, len(result.shots))), color="#4a7ab5")
    ax.set_xlabel("shot length (s)")
    ax.set_ylabel("shots")
    hist = _png(fig)
    plt.close(fig)

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in report.items() if k in ("switches_per_min", "mean_shot_s", "cuts", "ping_pong",
                                                       "mid_word_cuts", "speaker_follow", "duration_s",
                                                       "model_version"))
    cut_rows = "".join(f"<tr><td>{c['t']:.2f}</td><td>{c['from']}</td><td>{c['to']}</td><td>{c['reason']}</td>"
                       f"<td>{c['transition']}</td></tr>" for c in cuts)
    details = "".join(f"<tr><td>{d.t:.2f}</td><td>{html.escape(d.reason)}</td><td>{html.escape(d.detail)}</td></tr>"
                      for d in decisions if d.cut)
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings) or "<li>none</li>"
    said = "".join(f"<tr><td>{n['start']:.2f}</td><td>{n['end']:.2f}</td><td>{html.escape(n['text'])}</td>"
                   f"<td>{n['event']}</td><td>{n['provider']}</td></tr>" for n in (narration or {}).get("lines", []))
    outcomes = narration_outcomes((narration or {}).get("stats", {}))
    said_section = (f"<h2>Narration</h2><table><tr><th>from (s)</th><th>to</th><th>line</th><th>event</th>"
                    f"<th>voice</th></tr>{said}</table><p>{html.escape(outcomes)}</p>"
                    if narration is not None else "")
    reason_rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in reasons.most_common())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>AI-OBS report {result.session_id}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}h2{{margin-top:28px}}</style></head><body>
<h1>AI-OBS program report</h1><p>session <code>{result.session_id}</code>, {len(cams)} cameras,
{result.duration_s:.1f} s, directed in {result.timings.get('total_s')} s
({result.timings.get('x_realtime')}x real time). <a href="program.mp4">program.mp4</a> ·
<a href="cuts.edl">cuts.edl</a> · <a href="cuts.otio">cuts.otio</a> · <a href="report.json">report.json</a></p>
<h2>Metrics</h2><table>{rows}</table>
<h2>Timeline</h2><img src="data:image/png;base64,{timeline}" style="max-width:100%">
<h2>Shot lengths</h2><img src="data:image/png;base64,{hist}">
<h2>Decisions by rule (every tick)</h2><table><tr><th>rule</th><th>ticks</th></tr>{reason_rows}</table>
<h2>Cuts</h2><table><tr><th>t (s)</th><th>from</th><th>to</th><th>reason</th><th>transition</th></tr>{cut_rows}</table>
<h2>Why each cut happened</h2><table><tr><th>t (s)</th><th>rule</th><th>detail</th></tr>{details}</table>
{said_section}
<h2>Warnings</h2><ul>{warn}</ul></body></html>"""
    (out / "report.html").write_text(page)
