"""Narration: how fast the voices answer, how fast the fallback takes over, and whether lines ever cover speech.

1. Time to first audio (TTFA) and to the whole line, median of 8 lines: Piper on this CPU, and ElevenLabs through
   the real SDK against the local stand-in (tests/elevenlabs_standin.py; it streams 100 ms chunks every 20 ms).
2. Fallback switch time: ElevenLabs first, Piper second (runtime.tts.FallbackTTS); the stand-in answers 500, or
   stalls mid-stream (elevenlabs_timeout_s = 1 s): from the request to the first audio of the whole line by Piper.
3. Overlap of narration with speech (ground-truth word times) on the demo sample and on two conversations unlike
   it (bench/direction.py's chat4 and lecture4), `aiobs direct --narrate` with default settings, side by side
   with the simple alternative: a narrator that says the same lines at its events (rate-limited alike) without
   waiting for a pause.

    .venv/bin/python bench/narration.py      # ~4 min on a 2-core CPU

Last line: one JSON object. Target: 0 s of narration over speech.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))

LINES = ["Over to Speaker 2.", "Speaker 1 now.", "Here is the Wide.", "On Stage, a rabbit wakes up.",
         "Speaker 3 mentions goal.", "A look at Speaker 1.", "The operator takes the Wide.", "Back to the room."]


def ttfa(tts) -> dict:
    first, total = [], []
    for text in LINES:
        s = tts.speak(text)
        first.append(s.first_audio_s * 1000)
        total.append(s.total_s * 1000)
    return {"ttfa_ms_p50": round(statistics.median(first), 1), "line_ms_p50": round(statistics.median(total), 1)}


def switch_ms(fault: str, piper) -> float:
    from tests.elevenlabs_standin import API_KEY, StandIn

    from runtime.tts import ElevenLabsTTS, FallbackTTS

    times = []
    with StandIn(hang_s=2.0, chunk_delay_s=0.02) as srv:
        fb = FallbackTTS([ElevenLabsTTS(API_KEY, "v", "m", srv.url, timeout_s=1.0), piper], rate=16000,
                         failures_to_open=100, probe_interval_s=60)
        for text in LINES[:4]:
            srv.faults.append(fault)
            s = fb.speak(text)
            assert s.provider == "piper", s.provider
            times.append(s.first_audio_s * 1000)
        fb.close()
    return round(statistics.median(times), 1)


def overlap(lines, words) -> float:
    return sum(max(0.0, min(e1, e) - max(s1, s)) for s1, e1 in lines for s, e in words)


def naive_lines(report: dict, interval_s: float) -> list[tuple[float, float]]:
    """The same lines, said at their events (rate-limited alike), without waiting for a pause."""
    out, last = [], -1e9
    durations = [u["end"] - u["start"] for u in report["narration"]["lines"]] or [1.0]
    d = statistics.median(durations)
    for c in report["cut_list"]:
        if c["t"] - last >= interval_s:
            out.append((c["t"], c["t"] + d))
            last = c["t"]
    return out


def narrate_session(name: str, media: Path, data: Path) -> dict:
    from runtime.direct import direct
    from runtime.settings import load_settings

    settings = load_settings(env={}, data_dir=data)
    out = data / f"{name}-program"
    r = direct(sorted(media.glob("cam*.mp4")), out, settings, truth=media / "ground_truth.json", narrate=True)
    report = json.loads((out / "report.json").read_text())
    truth = json.loads((media / "ground_truth.json").read_text())
    words = [(w[0], w[1]) for line in truth["speech"] for w in line["words"]]
    lines = [(u["start"], u["end"]) for u in report["narration"]["lines"]]
    naive = naive_lines(report, settings.narration_interval_s)
    return {"session": name, "duration_s": round(r.duration_s, 1), "lines": len(lines),
            "narrated_s": round(sum(e - s for s, e in lines), 2), "overlap_s": round(overlap(lines, words), 3),
            "naive_lines": len(naive), "naive_overlap_s": round(overlap(naive, words), 3),
            "stats": report["narration"]["stats"], "x_realtime": r.timings["x_realtime"]}


def main() -> None:
    from bench.direction import SESSIONS, build
    from runtime.sample import build_sample
    from runtime.tts import PiperTTS

    piper = PiperTTS()
    piper.speak("Warm up.")
    from tests.elevenlabs_standin import API_KEY, StandIn

    from runtime.tts import ElevenLabsTTS

    res: dict = {"piper": ttfa(piper)}
    with StandIn(chunk_delay_s=0.02) as srv:
        res["elevenlabs_standin"] = ttfa(ElevenLabsTTS(API_KEY, "v", "m", srv.url))
    res["fallback_switch_ms"] = {"http_500": switch_ms("500", piper), "stall_1s_timeout": switch_ms("stall", piper)}
    print(json.dumps(res), flush=True)

    sample = ROOT / ".cache" / "bench" / "narration" / "sample"
    if not (sample / "ground_truth.json").is_file():
        build_sample(sample, cameras=5, duration_s=60.0, seed=0)
    sessions = [("sample", sample)] + [(n, build(n, SESSIONS[n])) for n in ("chat4", "lecture4")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, media in sessions:
            t0 = time.perf_counter()
            row = narrate_session(name, media, Path(tmp))
            rows.append(row)
            print(json.dumps(row), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    res["sessions"] = rows
    res["overlap_s"] = round(sum(r["overlap_s"] for r in rows), 3)
    res["naive_overlap_s"] = round(sum(r["naive_overlap_s"] for r in rows), 3)
    res["lines"] = sum(r["lines"] for r in rows)
    res["meets_target"] = res["overlap_s"] == 0.0 and res["lines"] > 0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
