"""Prometheus metrics of the runtime (scraped from the service's /metrics; `prometheus_client` default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STAGE_SECONDS = Histogram(
    "aiobs_analysis_stage_seconds", "Time per analysis stage (per frame for vision stages, per tick for `tick`)",
    ["stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0))
DEGRADED = Counter("aiobs_analysis_degraded_total", "Feature groups degraded by a failing or missing model",
                   ["stage", "camera"])
FRAMES_DROPPED = Counter("aiobs_frames_dropped_total", "Frames replaced in a latest-frame slot before analysis",
                         ["camera"])
