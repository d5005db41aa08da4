"""The README's main job on embedded defaults: sample -> direct -> report, then the feature log in ClickHouse.

    ./dev.sh demo             # writes out/demo/ (cameras, program.mp4, cuts.edl/.otio, report.html)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .cli import main as aiobs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Path("out/demo")
    cams = [str(out / f"cam{i}.mp4") for i in range(1, 6)]
    steps = [
        ["doctor", "--mode", "files"],
        ["sample", "--out", str(out), "--cameras", "5", "--duration", "60"],
        ["direct", *cams, "--truth", str(out / "ground_truth.json"), "--out", str(out / "program")],
        ["tables"],
    ]
    for step in steps:
        t = time.perf_counter()
        print(f"\n$ aiobs {' '.join(argv + step)}", flush=True)
        rc = aiobs(argv + step)
        print(f"  ({time.perf_counter() - t:.1f} s, exit {rc})", flush=True)
        if rc:
            return rc
    print(f"\nopen {(out / 'program' / 'report.html').resolve()} (program.mp4, cuts.edl and cuts.otio beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
