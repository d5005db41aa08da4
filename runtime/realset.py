"""Real media for the learned director: the evaluation set of the promotion gate, and labelled training sessions.

A model trained on simulated features can be harmful on real footage (a champion that followed the b-roll camera).
So the gate also replays every candidate on sessions whose features come from the real analysis of media, and
scores the program against their ground truth: speaker follow, cuts inside words, switches per minute.

The sessions are made by the sample generator (runtime/sample.py) with other seeds, voices, layouts and turn
patterns than the demo sample (Piper and espeak-ng voices, backchannels, overlaps, a session without b-roll, one
whose cameras share a room mix), run once through `aiobs direct`'s analysis and the director core, and cached as
their logged camera_ticks rows (`camera_ticks.parquet`) beside their ground truth (`ground_truth.json`), under
`settings.realset_dir`, keyed by the generator version, the spec and the feature schema version: rebuilt only when
one of them changes. Building the set (four sessions, 130 s of media) takes about 100 s on a 2-core CPU.

Training data with real features (`add_training_sessions`, `aiobs simulate --real N`): more generated conversations
(seeds, voices, speaker counts, turn patterns drawn per session, never the evaluation set's), directed through
`aiobs direct` by a scripted operator who takes each new speaker's close-up shortly after they start
(`operator_script`, from the ground truth), logged into the feature log like any directed session and marked
synthetic (the labels are scripted, not a human's). Training on them next to the simulator's sessions teaches a
model what the real analysis produces, which the simulator only approximates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

log = logging.getLogger(__name__)

REALSET_VERSION = 1


def _specs() -> dict:
    from .sample import SessionSpec, Voice

    espeak = Voice(1.0, engine="espeak", variant="en-us+f3")
    return {
        "real-chat3": SessionSpec(speakers=3, duration_s=30.0, seed=101, sentences_per_turn=(1, 2),
                                  backchannel_p=0.4, overlap_p=0.3, voices=(espeak, Voice(0.92, 1.08), Voice())),
        "real-talk2": SessionSpec(speakers=2, duration_s=30.0, seed=102, sentences_per_turn=(2, 3), bleed=0.15,
                                  broll=False, voices=(Voice(1.1, 0.93), espeak)),
        "real-panel4": SessionSpec(speakers=4, duration_s=30.0, seed=103, sentences_per_turn=(1, 3),
                                   max_offset_s=1.2),
        # `aiobs sample --seed 3`'s first 40 s: a turn starts at 30 s while the b-roll is at its busiest (a champion
        # tuned on action-loving simulated directors cut to the b-roll there)
        "real-sample3": SessionSpec(speakers=3, duration_s=40.0, seed=3),
    }


SESSIONS = ("real-chat3", "real-talk2", "real-panel4", "real-sample3")


@dataclass
class RealSession:
    name: str
    camera_ticks: object  # pandas DataFrame: the session's logged camera_ticks rows (real analysis)
    lines: list  # ground-truth speech lines (camera, kind, start, end, words)
    duration_s: float
    tick_s: float

    @cached_property
    def ticks(self) -> list:
        """(t, cameras sorted by id) per tick of the logged rows: what the director core is fed (built once: the
        promotion gate and every tuning trial replay the same sessions)."""
        from ranker.core import CameraTick

        rows = self.camera_ticks.sort_values(["tick", "camera_id"])
        out = []
        for _, g in rows.groupby("tick", sort=True):
            recs = g.to_dict("records")
            out.append((float(recs[0]["t"]), [CameraTick.from_row(r) for r in recs]))
        return out

    @cached_property
    def ranker_rows(self) -> list:
        """Every tick's ranker rows, as the director core computes them (ranker/core.py `session_features`: they
        depend on the scene alone, so one pass serves every ranker and policy)."""
        from ranker.core import session_features

        return session_features(self.ticks, self.tick_s)


def _key(name: str, spec) -> str:
    from features.schema import SCHEMA_VERSION

    from .sample import GENERATOR_VERSION

    text = f"{REALSET_VERSION}:{GENERATOR_VERSION}:{SCHEMA_VERSION}:{spec!r}"
    return f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def real_sessions(realset_dir: str | Path, names=SESSIONS, yolo_model: str | None = None,
                  progress=None) -> list[RealSession]:
    """The real-media sessions `names`, built and analysed on first use (cached under `realset_dir`, normally
    settings.realset_dir; `yolo_model` = the person detector the analysis runs, default the settings' default)."""
    import pandas as pd

    specs = _specs()
    root = Path(realset_dir)
    out = []
    for name in names:
        if name not in specs:
            raise ValueError(f"unknown real-media session {name!r}; known: {sorted(specs)}")
        d = root / _key(name, specs[name])
        if not (d / "camera_ticks.parquet").is_file():
            if progress:
                progress(f"real-media set: building and analysing {name} (once; cached in {d})")
            _build(name, specs[name], d, yolo_model)
        truth = json.loads((d / "ground_truth.json").read_text())
        ticks = pd.read_parquet(d / "camera_ticks.parquet")
        t = sorted(set(ticks["t"].tolist()))
        tick_s = float(pd.Series(t).diff().median()) if len(t) > 1 else 0.2
        out.append(RealSession(name, ticks, truth["speech"], float(truth["duration_s"]), tick_s))
    return out


def _build(name: str, spec, dest: Path, yolo_model: str | None) -> None:
    from features.store import FeatureStore

    from .direct import direct
    from .sample import build_conversation
    from .settings import load_settings

    with tempfile.TemporaryDirectory(prefix="aiobs-realset-") as tmp:
        media = Path(tmp) / "media"
        build_conversation(media, spec)
        local = load_settings(env={}, data_dir=Path(tmp) / "data", **({"yolo_model": yolo_model} if yolo_model else {}))
        direct(sorted(media.glob("cam*.mp4")), Path(tmp) / "out", local, truth=media / "ground_truth.json",
               session_id=name, progress=lambda *a: None)
        with FeatureStore(local.clickhouse_dsn) as store:
            ticks = store.frame("camera_ticks", sessions=[name])
        if ticks.empty:
            raise RuntimeError(f"real-media session {name}: the analysis logged no rows")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        ticks.to_parquet(staging / "camera_ticks.parquet")
        shutil.copy(media / "ground_truth.json", staging / "ground_truth.json")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)  # complete or absent: a crash mid-build never leaves a half session
    log.info("real-media set: %s analysed into %s", name, dest)


def operator_script(truth: dict, delay_s: float = 0.5, camera_of=None) -> list[dict]:
    """A scripted operator following the ground truth: a `take` of each new speaker's camera `delay_s` after their
    line starts (backchannels are not turns); `aiobs direct --operator`'s JSON items."""
    script, on = [], None
    for line in sorted(truth["speech"], key=lambda x: x["start"]):
        if line["kind"] == "line" and line["camera"] != on:
            on = line["camera"]
            script.append({"t": round(float(line["start"]) + delay_s, 3), "action": "take", "camera": on,
                           "operator": "script:truth"})
    return script


def training_spec(seed: int):
    """A varied conversation for training (never one of the evaluation set's specs)."""
    import numpy as np

    from .sample import VOICES, SessionSpec, Voice

    rng = np.random.default_rng(10_000 + seed)
    speakers = int(rng.integers(2, 5))
    pool = list(VOICES) + [Voice(1.0, engine="espeak", variant="en-us+f3"), Voice(0.9, engine="espeak")]
    voices = tuple(pool[int(i)] for i in rng.choice(len(pool), speakers, replace=False))
    lo = int(rng.integers(1, 3))
    return SessionSpec(speakers=speakers, duration_s=30.0, seed=10_000 + seed, voices=voices,
                       sentences_per_turn=(lo, lo + int(rng.integers(0, 3))),
                       backchannel_p=float(rng.uniform(0, 0.5)), overlap_p=float(rng.uniform(0, 0.5)),
                       bleed=float(rng.uniform(0.03, 0.2)), broll=bool(rng.random() < 0.7),
                       max_offset_s=float(rng.uniform(0.1, 1.2)))


def add_training_sessions(settings, n: int, seed: int = 0, progress=None) -> int:
    """Build `n` conversations (`training_spec(seed + i)`), direct each with the truth-following operator script into
    the settings' feature log (rows marked synthetic); returns the number of sessions written."""
    from features.store import FeatureStore

    from .direct import direct, read_operator_script
    from .sample import build_conversation

    names = [f"realtrain-{seed + i:05d}" for i in range(n)]
    with FeatureStore(settings.clickhouse_dsn) as store:  # a session is never logged twice (its labels would count twice)
        store.ensure_schema()
        known = set(store.sessions(among=names)) if names else set()
    written = 0
    for i in range(n):
        name = names[i]
        if name in known:
            if progress:
                progress(f"real-media training session {name} is already in the feature log: skipped")
            continue
        spec = training_spec(seed + i)
        with tempfile.TemporaryDirectory(prefix="aiobs-realtrain-") as tmp:
            gt = build_conversation(Path(tmp) / "media", spec)
            script = Path(tmp) / "operator.json"
            script.write_text(json.dumps(operator_script(json.loads(gt.read_text()))))
            if progress:
                progress(f"real-media training session {i + 1}/{n}: {name} ({spec.speakers} speakers)")
            direct(sorted(gt.parent.glob("cam*.mp4")), Path(tmp) / "out", settings, truth=gt, session_id=name,
                   operator=read_operator_script(script), synthetic=True, progress=lambda *a: None)
        written += 1
    return written
