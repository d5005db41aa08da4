"""Feature-log throughput: spool append rate, ship rate into chDB, rows lost. Last line: one JSON object.

Targets (2-core CPU): spool >= 50,000 rows/s, ship >= 200,000 rows/s, 0 lost.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from features.schema import CAMERA_TICKS  # noqa: E402
from features.shipper import SegmentShipper  # noqa: E402
from features.spool import FeatureLog  # noqa: E402
from features.store import FeatureStore  # noqa: E402

N = int(os.environ.get("BENCH_ROWS", "200000"))
CAMERAS = 5


def rows(n: int):
    t0 = time.time()
    for i in range(n):
        tick = i // CAMERAS
        yield {
            "session_id": "bench", "room": "studio", "ts": t0 + tick * 0.2, "tick": tick,
            "camera_id": f"cam{i % CAMERAS}", "people_count": i % 4, "largest_person_area": 0.12,
            "person_centrality": 0.8, "track_continuity": 0.9, "track_age_s": 12.5, "person_speed": 0.01,
            "face_count": 1, "largest_face_area": 0.03, "face_centrality": 0.7, "motion_energy": 0.2,
            "audio_dbfs": -31.5, "speech_prob": 0.85, "keyword_hits": 0, "asr_words_per_s": 2.5,
            "vlm_interest": 3.0, "vlm_age_s": 0.4, "on_program": i % CAMERAS == 0, "since_on_program_s": 3.0,
            "score": 0.42, "model_version": "baseline", "ab_variant": "champion", "degraded": {},
        }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        data = list(rows(N))  # row construction is the caller's cost, not the spool's
        with FeatureLog(spool, [CAMERA_TICKS], max_rows=20000, max_age_s=3600) as log:
            t = time.perf_counter()
            for r in data:
                log.append("camera_ticks", r)
            spool_s = time.perf_counter() - t
        with FeatureStore(f"chdb://{tmp}/ch") as store:
            store.ensure_schema()  # one-off DDL is not part of the steady-state ship rate
            shipper = SegmentShipper(spool, store)
            shipper._schema_ready = True
            t = time.perf_counter()
            report = shipper.ship_once()
            ship_s = time.perf_counter() - t
            stored = store.count("camera_ticks")
    result = {
        "rows": N,
        "spool_rows_per_s": round(N / spool_s),
        "ship_rows_per_s": round(report.rows / ship_s),
        "rows_lost": N - stored,
        "spool_vs_target": round(N / spool_s / 50_000, 2),
        "ship_vs_target": round(report.rows / ship_s / 200_000, 2),
        "segments": report.segments,
    }
    print(f"spool {result['spool_rows_per_s']:,} rows/s, ship {result['ship_rows_per_s']:,} rows/s, "
          f"lost {result['rows_lost']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
