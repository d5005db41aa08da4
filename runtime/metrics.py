"""Prometheus metrics of the runtime (scraped from the service's /metrics; `prometheus_client` default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STAGE_SECONDS = Histogram(
    "aiobs_analysis_stage_seconds", "Time per analysis stage (per frame for vision stages, per tick for `tick`)",
    ["stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0))
DEGRADED = Counter("aiobs_analysis_degraded_total", "Feature groups degraded by a failing or missing model",
                   ["stage", "camera"])
FRAMES_DROPPED = Counter("aiobs_frames_dropped_total", "Frames replaced in a latest-frame slot before analysis",
                         ["camera"])

# -- the director core's own series (ranker/core.py counts them for every production session: live, the service,
# `aiobs direct`; never replay or evaluation)
from ranker.core import CUTS, MODEL_IN_USE, OVERRIDES, TICKS  # noqa: E402,F401

# -- live mode ---------------------------------------------------------------------------------------------------------
TICKS_MISSED = Counter("aiobs_live_ticks_missed_total", "Ticks skipped because the one before ran late", ["room"])
TICKS_FAILED = Counter("aiobs_live_ticks_failed_total", "Ticks that raised (directing went on)", ["room"])
LATE_CUTS = Counter("aiobs_live_late_cuts_total", "Cuts decided after their placed time had aired", ["room"])
PROGRAM_FRAMES = Counter("aiobs_live_program_frames_total", "Program video frames published", ["room"])
STREAM_RESTARTS = Counter("aiobs_live_stream_restarts_total", "Track streams renewed after yielding nothing while "
                          "subscribed and unmuted", ["room", "feed"])
RECONNECTS = Counter("aiobs_live_reconnects_total", "LiveKit link losses the room recovered from", ["room"])
CONNECTED = Gauge("aiobs_live_connected", "1 while the room's LiveKit link is up", ["room"],
                  multiprocess_mode="livemax")  # `bentoml serve`: the live worker's value, no stale pid series
TICK_SECONDS = Histogram("aiobs_live_tick_seconds", "Wall time of one live tick (analysis + director core)", ["room"],
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0))
PROGRAM_FRAME_OUT_SECONDS = Histogram(
    "aiobs_live_program_frame_out_seconds",
    "From a camera frame's arrival (plus broadcast delay and lip-sync hold) to the program frame showing it being sent",
    ["room"], buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32))
