"""Directing quality against the peer a user would pick, side by side, on conversations unlike the demo sample.

Builds varied multi-speaker sessions (3-4 speakers, Piper voices and espeak-ng, short and long turns, backchannels,
overlapping turn changes, bleed levels, camera offsets, one session whose cameras share a single room mix) with
exact word times, runs `aiobs direct` (the rule baseline ranker, default settings) and a loudest-mic switcher (level
EMA, 6 dB margin, 0.5 s confirm, 2 s hold) on the same sessions, and prints per session and system:
speaker_follow (each turn's speech after its first 1.5 s), mid_word_cuts (the program audio switching inside any
word), backchannel_cuts, switches_per_min, turn_reaction p50/p95, and direct's x_realtime.

    .venv/bin/python bench/direction.py            # every session (~10 min on a 2-core CPU)
    BENCH_SESSIONS=chat4,overlap3 .venv/bin/python bench/direction.py

Sessions are cached in .cache/bench/direction (rebuilt when their spec changes). Last line: one JSON object.
Targets: speaker_follow >= 0.95 and above the peer on every session, 0 mid-word cuts, 0 backchannel cuts, reaction
p50 <= 0.5 s, direct >= 2x real time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".cache" / "ultralytics"))

import numpy as np  # noqa: E402

from runtime.sample import SessionSpec, Voice  # noqa: E402

ESPEAK = Voice(1.0, engine="espeak", variant="en-us+f3")
SESSIONS: dict[str, SessionSpec] = {
    "panel3": SessionSpec(speakers=3, seed=11),
    "chat4": SessionSpec(speakers=4, seed=5, sentences_per_turn=(1, 3), backchannel_p=0.5, overlap_p=0.5,
                         bleed=0.15, voices=(Voice(), ESPEAK, Voice(0.9, 1.1), Voice(1.1, 0.92))),
    "overlap3": SessionSpec(speakers=3, seed=21, sentences_per_turn=(2, 3), backchannel_p=0.3, overlap_p=0.9,
                            voices=(ESPEAK, Voice(0.95, 1.06), Voice(1.1, 0.93))),
    "quickfire3": SessionSpec(speakers=3, seed=8, sentences_per_turn=(1, 1), bleed=0.25, max_offset_s=1.5,
                              voices=(Voice(0.9, 1.0), Voice(1.0, 1.12), ESPEAK)),
    "lecture4": SessionSpec(speakers=4, seed=3, sentences_per_turn=(4, 6), backchannel_p=0.6, bleed=0.05,
                            broll=False),
    "sharedmic3": SessionSpec(speakers=3, seed=13, shared_mic=True, listeners_still=True),
}


def build(name: str, spec: SessionSpec) -> Path:
    from runtime.sample import GENERATOR_VERSION, build_conversation

    key = hashlib.sha1(f"{GENERATOR_VERSION}:{spec!r}".encode()).hexdigest()[:10]
    d = ROOT / ".cache" / "bench" / "direction" / f"{name}-{key}"
    if not (d / "ground_truth.json").is_file():
        build_conversation(d, spec)
    return d


def peer_program(d: Path, truth: dict):
    from ranker.peers import loudest_mic
    from runtime.media import SAMPLE_RATE, read_audio

    n = int(truth["duration_s"] * SAMPLE_RATE)
    audio = {}
    for c in truth["cameras"]:
        a = read_audio(d / c["file"])
        off = int(c["offset_s"] * SAMPLE_RATE)
        x = np.zeros(n, np.float32)
        x[off:off + a.size] = a[:max(0, n - off)]
        audio[c["id"]] = x
    return loudest_mic(audio, SAMPLE_RATE, truth["duration_s"])


def run_session(name: str, spec: SessionSpec, data_dir: Path) -> dict:
    """Both systems on one session -> {"aiobs": metrics + x_realtime, "peer": metrics}."""
    from ranker.metrics import summary
    from runtime.direct import direct
    from runtime.settings import load_settings

    d = build(name, spec)
    truth = json.loads((d / "ground_truth.json").read_text())
    settings = load_settings(env={}, data_dir=data_dir)
    r = direct(sorted(d.glob("cam*.mp4")), d / "program", settings, truth=d / "ground_truth.json",
               session_id=f"bench-{name}", progress=lambda *a: None)
    keys = ("speaker_follow", "mid_word_cuts", "backchannel_cuts", "switches_per_min", "turn_reaction_p50_s",
            "turn_reaction_p95_s")
    ours = {k: r.metrics[k] for k in keys}
    ours["x_realtime"] = r.timings["x_realtime"]
    peer = summary(peer_program(d, truth), truth["duration_s"], truth["speech"])
    return {"aiobs": ours, "peer": {k: peer[k] for k in keys}, "program": str(d / "program" / "program.mp4")}


def meets_targets(res: dict) -> dict:
    a, p = res["aiobs"], res["peer"]
    return {"follow_ge_0_95": a["speaker_follow"] >= 0.95, "follow_above_peer": a["speaker_follow"] > p["speaker_follow"],
            "no_mid_word": a["mid_word_cuts"] == 0, "no_backchannel": a["backchannel_cuts"] == 0,
            "reaction_p50_le_0_5": a["turn_reaction_p50_s"] is not None and a["turn_reaction_p50_s"] <= 0.5,
            "x_realtime_ge_2": a["x_realtime"] >= 2.0}


def main() -> None:
    names = [n for n in os.environ.get("BENCH_SESSIONS", ",".join(SESSIONS)).split(",") if n]
    out, t0 = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            res = run_session(name, SESSIONS[name], Path(tmp) / name)
            res["targets"] = meets_targets(res)
            out[name] = res
            print(name, json.dumps(res), flush=True)
    follow = [r["aiobs"]["speaker_follow"] for r in out.values()]
    print(json.dumps({
        "sessions": {k: {s: v[s] for s in ("aiobs", "peer", "targets")} for k, v in out.items()},
        "aiobs_follow_min": min(follow), "peer_follow_min": min(r["peer"]["speaker_follow"] for r in out.values()),
        "aiobs_mid_word_total": sum(r["aiobs"]["mid_word_cuts"] for r in out.values()),
        "peer_mid_word_total": sum(r["peer"]["mid_word_cuts"] for r in out.values()),
        "aiobs_backchannel_total": sum(r["aiobs"]["backchannel_cuts"] for r in out.values()),
        "x_realtime_min": min(r["aiobs"]["x_realtime"] for r in out.values()),
        "all_targets_met": all(all(r["targets"].values()) for r in out.values()),
        "bench_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
