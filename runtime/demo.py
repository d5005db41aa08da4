"""The README's main job on embedded defaults: check every component, then exercise the feature log end to end.

Grows with the product: once `aiobs sample` / `aiobs direct` exist this runs sample -> direct -> report.
"""

from __future__ import annotations

import sys
import time

from .cli import main as aiobs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    steps = [["doctor", "--mode", "files"], ["ingest"], ["tables"]]
    for step in steps:
        t = time.perf_counter()
        print(f"\n$ aiobs {' '.join(argv + step)}", flush=True)
        rc = aiobs(argv + step)
        print(f"  ({time.perf_counter() - t:.1f} s, exit {rc})", flush=True)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
