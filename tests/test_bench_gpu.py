"""bench/gpu.py (issue 14's GPU benchmark) must keep running: its --tiny CPU run, and the batched VLM read it times."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_vlm import build_tiny_vlm

ROOT = Path(__file__).resolve().parent.parent


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _check_stats(s: dict, where: str) -> None:
    assert _finite_positive(s["p50"]) and _finite_positive(s["p95"]), (where, s)
    assert s["p95"] >= s["p50"] and s["n"] >= 1, (where, s)


@pytest.fixture(scope="module")
def tiny_run() -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--tiny", "--device", "cpu"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert lines, p.stderr[-3000:]
    return json.loads(lines[-1])  # the last stdout line is the one JSON object


def test_tiny_run_reports_every_stage(tiny_run):
    r = tiny_run
    for key in ("device", "device_name", "torch", "cuda", "transformers", "ultralytics", "sizes", "detect_ms",
                "raw_fp16_ms", "track_features_ms", "tick_ms", "tick_includes", "vlm_ms", "vlm_analyzer",
                "peak_gpu_mb", "peak_rss_mb", "wall_s", "reasons"):
        assert key in r, key
    assert r["device"] == "cpu" and r["cuda_available"] is False
    assert r["sizes"]["frame"] == "640x360" and r["sizes"]["detect_imgsz"] == 320
    assert r["sizes"]["vlm"]["size"] == "tiny" and r["sizes"]["vlm"]["params"] > 0

    # the detector's two backends through PersonDetector, per batch size (predict is the CPU default)
    d = r["detect_ms"]
    assert d["default_backend"] == "predict"
    for backend in ("direct", "predict"):
        for b in ("1", "5"):
            _check_stats(d[backend][b], f"detect {backend} {b}")
            assert _finite_positive(d[backend][b]["per_frame_ms"])
    assert d["direct_info"]["backend"] == "direct" and d["direct_info"]["frames"] > 0
    assert [len(c) for c in d["agreement"]["box_counts_direct_predict"]] == [2] * 5

    # ByteTrack + features for 5 cameras
    _check_stats(r["track_features_ms"], "track")
    assert r["track_features_ms"]["cameras"] == 5 and "TemporalState" in r["track_features_ms"]["includes"]

    # rooms of 5 cameras, each its own engine at 5 Hz on the wall clock, one shared detector
    for rooms, cams in (("1", 5), ("2", 10)):
        t = r["tick_ms"][rooms]
        _check_stats(t, f"tick {rooms}")
        assert t["cameras"] == cams and t["ticks_expected"] >= t["ticks_run"] >= 3
        assert 0 < t["ticks_run_share"] <= 1 and t["detect_batches"] > 0 and t["detect_frames"] > 0
        assert _finite_positive(t["stage_p50_ms"]["detect_track"]) and _finite_positive(t["stage_p50_ms"]["motion"])
    assert r["tick_ms"]["2"]["frames_per_batch_max"] >= 5
    assert any("DetectionBatcher" in s for s in r["tick_includes"])

    # the project's VLM path: the analyzer's own precision choice, one batched read of 5 cameras
    a = r["vlm_analyzer"]
    assert a["precision"] == "float32" and a["static_cache"] is False and a["batch_sizes"] == [5]
    _check_stats(a["cam5_batched"], "analyzer")

    # VLM on a CPU: float32 only, through VlmModel; every read generated exactly the asked new tokens
    v = r["vlm_ms"]["float32"]
    _check_stats(v["cam1"], "vlm cam1")
    _check_stats(v["cam5_batched"], "vlm cam5 batched")
    assert _finite_positive(v["cam5_sequential_ms"]) and v["param_dtypes"] == ["float32"]
    tokens = r["sizes"]["vlm"]["new_tokens"]
    assert {tuple(c) for c in v["generate_calls_batch_new_tokens"]} == {(1, tokens), (5, tokens)}

    # what a CPU cannot measure is null, with a reason, never a number
    assert r["raw_fp16_ms"] is None and r["reasons"]["raw_fp16_ms"]
    assert r["peak_gpu_mb"] is None and r["reasons"]["peak_gpu_mb"]
    for prec in ("bf16", "nf4", "bf16_static"):
        assert r["vlm_ms"][prec] is None and r["reasons"][f"vlm_ms.{prec}"]
    assert _finite_positive(r["peak_rss_mb"]) and r["wall_s"] < 60


def test_read_many_is_one_batched_generate_with_per_frame_answers(tmp_path):
    from runtime.analysis.vlm import VlmModel, VlmParseError, VlmRead

    vm = VlmModel(str(build_tiny_vlm(tmp_path / "vlm")), device="cpu", max_new_tokens=10)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    calls = []
    generate = vm.model.generate

    def counting(*a, **k):
        out = generate(*a, **k)
        calls.append(int(out.shape[0]))
        return out

    vm.model.generate = counting
    single = [vm.answer(f) for f in frames]
    calls.clear()
    assert vm.answer_many(frames) == single  # batch row i answers frame i (greedy, same prompt)
    assert calls == [3]  # one generate for the three frames
    reads = vm.read_many(frames, [1.0, 2.0, 3.0])
    assert len(reads) == 3 and all(isinstance(x, (VlmRead, VlmParseError)) for x in reads)
    for x, t in zip(reads, (1.0, 2.0, 3.0)):
        if isinstance(x, VlmRead):
            assert x.t == t
    assert len(vm.read_many(frames[:2], 5.0)) == 2
    assert vm.read_many([], 0.0) == [] and vm.answer_many([]) == []
    with pytest.raises(ValueError):
        vm.read_many(frames, [1.0])


def test_read_many_parses_each_frame_on_its_own(tmp_path, monkeypatch):
    from runtime.analysis.vlm import VlmModel, VlmParseError, VlmRead

    vm = VlmModel(str(build_tiny_vlm(tmp_path / "vlm")), device="cpu", max_new_tokens=2)
    good = '{"scene": "stage", "subjects": ["host"], "activity": "talking", "focus": "sharp", "interest": 4}'
    monkeypatch.setattr(vm, "answer_many", lambda frames, **kw: [good, "no json here"][:len(frames)])
    a, b = vm.read_many([np.zeros((8, 8, 3), np.uint8)] * 2, [1.5, 2.5])
    assert isinstance(a, VlmRead) and a.interest == 4.0 and a.t == 1.5 and a.scene == "stage"
    assert isinstance(b, VlmParseError)  # one malformed answer does not lose the other camera's read
