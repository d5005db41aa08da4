"""`aiobs import FILE.parquet`: labelled sessions from elsewhere into the feature log, through the director core.

The column contract (one row per camera per tick; any order):

| column | type | |
|---|---|---|
| `session_id` | string | required; one directed show |
| `t` | number | required; the session clock of the tick, seconds (finite, >= 0) |
| `camera_id` | string | required |
| `human_camera` | string | the camera the human director had on program at this tick (the same on every row of the tick; empty or null = unlabelled). Or: |
| `on_program` | bool | true on the row of the camera the human had on program (at most one per tick) |
| any scene feature | number | `features.extract.SCENE_FEATURES` by name (`speech_prob`, `audio_rel_db`, `largest_face_area`, ...), within its range (`bounds` in features/schema.py: shares and probabilities 0-1, `audio_rel_db` <= 0, `vlm_interest` 1-5, ...); missing = the contract default (NULL for the VLM ones) |
| `speaking`, `speech_mask`, `quiet_at` | bool (or 0/1), whole 0-255, number | optional speech timing (what the runtime's VAD gives); a string such as "false" is refused |
| `room` | string | optional; default `import:<file name>` |

Every tick goes through `ranker.core.DirectorCore` (the rule baseline scores it, the default policy decides), so the
rows are exactly what a live session logs, the temporal context features (features/temporal.py) included; the
human's program becomes operator actions: a `lock` on the human's camera for as long as the human kept it (the label
`ranker/dataset.py` reads), a `release` where the file has no label. Unknown columns, missing required ones,
non-numeric, non-finite or out-of-range feature values (NULL only for the VLM reads), mistyped speech timing,
duplicate (session, tick, camera) rows, a human camera that is not in its tick and a session already in the feature
log are errors that name the row or session;
`--dry-run` checks and summarises without writing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from features.extract import SCENE_BOUNDS, SCENE_FEATURES, TEMPORAL_FEATURES

REQUIRED = ("session_id", "t", "camera_id")
TIMING = ("speaking", "speech_mask", "quiet_at")
OPTIONAL = ("human_camera", "on_program", "room") + TIMING
MAX_ROWS = 20_000_000
MAX_ID_LEN = 128


class ImportFileError(ValueError):
    """The file does not follow the column contract; the message names the first problem (and its row)."""


@dataclass
class ImportSummary:
    sessions: int = 0
    ticks: int = 0
    rows: int = 0
    cameras: set[str] = field(default_factory=set)
    labelled_ticks: int = 0
    human_cuts: int = 0
    features_present: list[str] = field(default_factory=list)
    features_missing: list[str] = field(default_factory=list)
    written: bool = False

    def line(self) -> str:
        share = self.labelled_ticks / self.ticks if self.ticks else 0.0
        return (f"{self.sessions} session(s), {self.ticks:,} ticks, {self.rows:,} rows, {len(self.cameras)} camera(s); "
                f"{share:.0%} of ticks labelled, {self.human_cuts} human cut(s); features present "
                f"{len(self.features_present)}/{len(SCENE_FEATURES)}"
                + (f" (missing take their defaults: {', '.join(self.features_missing)})"
                   if self.features_missing else ""))


def read_table(path: Path):
    """The file as a pandas frame (parquet, or csv for small hand-made files)."""
    import pandas as pd

    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(path).metadata
        if meta.num_rows > MAX_ROWS:
            raise ImportFileError(f"{path}: {meta.num_rows:,} rows; import at most {MAX_ROWS:,} per file (split it)")
        return pq.read_table(path).to_pandas()
    except ImportFileError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: say so in one line
        raise ImportFileError(f"{path}: not a readable parquet/csv file ({type(e).__name__}: {e})") from None


def validate(df) -> ImportSummary:
    """Check the column contract; ImportFileError names the first problem."""
    import pandas as pd

    from features.schema import CAMERA_TICKS

    cols = list(df.columns)
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ImportFileError(f"missing required column(s) {missing}; the contract: {list(REQUIRED)} + scene features "
                           f"+ human_camera or on_program")
    unknown = sorted(set(cols) - set(REQUIRED) - set(OPTIONAL) - set(SCENE_FEATURES))
    temporal = [c for c in unknown if c in TEMPORAL_FEATURES]
    if temporal:
        raise ImportFileError(f"column(s) {temporal} are temporal context features: they are computed on import from "
                              f"the session's ticks (features/temporal.py), drop them from the file")
    if unknown:
        raise ImportFileError(f"unknown column(s) {unknown}; scene features are {list(SCENE_FEATURES)}")
    if "human_camera" not in cols and "on_program" not in cols:
        raise ImportFileError("no label: give `human_camera` (the camera on the human's program at each tick) or "
                           "`on_program` (true on that camera's row)")
    if len(df) == 0:
        raise ImportFileError("the file has no rows")
    for c in ("session_id", "camera_id"):
        bad = df[c].isna() | (df[c].astype(str).str.len() == 0) | (df[c].astype(str).str.len() > MAX_ID_LEN)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ImportFileError(f"row {i}: {c} must be a non-empty string of at most {MAX_ID_LEN} characters, "
                               f"not {df[c].iloc[i]!r}")
    t = df["t"]
    if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t):
        raise ImportFileError(f"column t must be numbers (seconds), not {t.dtype} (e.g. {t.iloc[0]!r})")
    tv = t.astype(float).to_numpy()
    bad = ~np.isfinite(tv) | (tv < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ImportFileError(f"row {i}: t must be a finite number of seconds >= 0, not {float(tv[i])}")
    for f in [c for c in cols if c in SCENE_FEATURES]:
        if not pd.api.types.is_numeric_dtype(df[f]) or pd.api.types.is_bool_dtype(df[f]):
            raise ImportFileError(f"column {f} must be numbers, not {df[f].dtype} (e.g. {df[f].iloc[0]!r})")
        v = df[f].astype(float).to_numpy()
        # missing values: NULL only where the contract has NULLs (the VLM reads); elsewhere leave the column out
        bad = np.isinf(v) if CAMERA_TICKS[f].nullable else ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ImportFileError(f"row {i}: feature {f} is {float(v[i])} (not a finite number; a feature that is not "
                                  f"known for some rows is left out of the file, it then takes its contract default)")
        lo, hi = SCENE_BOUNDS[f]
        bad = (v < lo) | (v > hi)  # (NaN, where the contract allows it, compares false)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ImportFileError(f"row {i}: feature {f} is {float(v[i])}, outside its range {lo:g}..{hi:g}")
    for c, kind in (("on_program", "flag"), ("speaking", "flag"), ("speech_mask", "mask"), ("quiet_at", "time")):
        if c in cols:
            _check_column(df[c], c, kind)
    dup = df.duplicated(["session_id", "t", "camera_id"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ImportFileError(f"row {i}: a second row for session {df['session_id'].iloc[i]!r}, t {float(tv[i])}, camera "
                           f"{df['camera_id'].iloc[i]!r}")
    s = ImportSummary(sessions=int(df["session_id"].nunique()), rows=len(df),
                      cameras=set(df["camera_id"].astype(str)),
                      features_present=[f for f in SCENE_FEATURES if f in cols],
                      features_missing=[f for f in SCENE_FEATURES if f not in cols])
    return s


def _labels(g) -> dict[float, str]:
    """t -> the human's camera at that tick ("" = unlabelled) for one session's rows."""
    out: dict[float, str] = {}
    if "human_camera" in g.columns:
        for t, tick in g.groupby("t", sort=True):
            vals = {str(v) for v in tick["human_camera"] if isinstance(v, str) and v}
            if len(vals) > 1:
                raise ImportFileError(f"session {tick['session_id'].iloc[0]!r}, t {t}: rows disagree on human_camera "
                                   f"{sorted(vals)}")
            cam = vals.pop() if vals else ""
            if cam and cam not in set(tick["camera_id"].astype(str)):
                raise ImportFileError(f"session {tick['session_id'].iloc[0]!r}, t {t}: human_camera {cam!r} has no row "
                                   f"in that tick")
            out[float(t)] = cam
    else:
        for t, tick in g.groupby("t", sort=True):
            on = tick.loc[tick["on_program"].fillna(False).astype(bool), "camera_id"].astype(str).tolist()
            if len(on) > 1:
                raise ImportFileError(f"session {tick['session_id'].iloc[0]!r}, t {t}: on_program is true for "
                                   f"{on}; at most one camera is on the human's program")
            out[float(t)] = on[0] if on else ""
    return out


def _refuse_known_sessions(settings, sessions: list[str]) -> None:
    """A session already in the feature log is not imported twice (its labels would count twice in training)."""
    from features.store import FeatureStore

    try:
        with FeatureStore(settings.clickhouse_dsn) as store:
            store.ensure_schema()
            known = store.sessions(among=sessions)
    except Exception as e:  # noqa: BLE001 - the check needs the store: say why it could not be made
        raise ImportFileError(f"cannot check the feature log for these sessions ({type(e).__name__}: {e})") from None
    if known:
        names = known
        raise ImportFileError(f"session(s) {names[:5]}{' ...' if len(names) > 5 else ''} are already in the feature "
                              f"log: importing them again would count their labels twice (rename the session_id)")


def _check_column(col, name: str, kind: str) -> None:
    """An optional column: `flag` true/false (booleans, or 0/1), `mask` whole numbers 0-255, `time` finite numbers;
    NULL = not given. A string such as "false" is refused, never read as true."""
    import pandas as pd

    want = {"flag": "true/false (or 0/1)", "mask": "a whole number 0-255", "time": "a finite number of seconds"}[kind]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        v = col.astype(float).to_numpy()
        given = ~np.isnan(v)
    else:  # objects: NULLs, booleans, numbers; anything else (a string) is refused
        v, given = np.full(len(col), np.nan), np.zeros(len(col), bool)
        for i, x in enumerate(col.to_numpy(dtype=object)):
            if x is None or (isinstance(x, float) and math.isnan(x)):
                continue
            if isinstance(x, (bool, np.bool_, int, float, np.integer, np.floating)):
                v[i], given[i] = float(x), True
            else:
                raise ImportFileError(f"row {i}: {name} must be {want}, not {x!r}")
    ok = {"flag": np.isin(v, (0.0, 1.0)), "mask": (v >= 0) & (v <= 255) & (v == np.round(v)),
          "time": np.isfinite(v)}[kind]
    bad = given & ~ok
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        x = col.iloc[i]
        raise ImportFileError(f"row {i}: {name} must be {want}, not {x.item() if hasattr(x, 'item') else x!r}")


def import_file(path: str | Path, settings, *, dry_run: bool = False, policy=None) -> ImportSummary:
    """Validate `path` and (unless `dry_run`) write its sessions to the feature log (spool, then ClickHouse in
    embedded mode). Raises ImportFileError for a file that breaks the contract; nothing is written then."""
    from features.schema import CAMERA_TICKS, DECISIONS, OVERRIDES
    from features.spool import FeatureLog
    from ranker.core import CameraTick, DirectorCore, is_missing
    from ranker.policy import Override

    path = Path(path)
    df = read_table(path)
    summary = validate(df)
    df = df.sort_values(["session_id", "t", "camera_id"], kind="stable").reset_index(drop=True)
    plans = []  # (session, room, [(t, [CameraTick], [Override])]) -- every tick built before anything is written
    features = [f for f in SCENE_FEATURES if f in df.columns]
    for sid, g in df.groupby("session_id", sort=True):
        labels = _labels(g)
        times = sorted(labels)
        tick_s = float(np.median(np.diff(times))) if len(times) > 1 else 0.2
        if not math.isfinite(tick_s) or tick_s <= 0:
            raise ImportFileError(f"session {sid!r}: ticks must have distinct times")
        room = str(g["room"].iloc[0]) if "room" in g.columns and isinstance(g["room"].iloc[0], str) \
            else f"import:{path.name}"
        ticks, held = [], ""
        # the human's shots: a lock per shot, for as long as the human kept that camera
        shot_end: dict[float, float] = {}
        k = 0
        while k < len(times):
            j = k
            while j + 1 < len(times) and labels[times[j + 1]] == labels[times[k]]:
                j += 1
            shot_end[times[k]] = times[j] + tick_s
            k = j + 1
        for t, tick in g.groupby("t", sort=True):
            t = float(t)
            cams = []
            for r in tick.itertuples(index=False):
                row = r._asdict()
                feats = {f: float(row[f]) if not is_missing(row[f]) else None for f in features}  # counts checked there
                timing = {name: cast(row[name]) for name, cast in (("speaking", bool), ("speech_mask", int),
                                                                    ("quiet_at", float))
                          if name in row and not is_missing(row[name])}
                try:
                    cams.append(CameraTick.from_features(str(row["camera_id"]), feats, **timing))
                except ValueError as e:
                    raise ImportFileError(f"session {sid!r}, t {t}: {e}") from None
            human = labels[t]
            ovs = []
            if human != held:
                if human:
                    ovs.append(Override("lock", human, timeout_s=max(1e-3, shot_end[t] - t), operator="import"))
                else:
                    ovs.append(Override("release", operator="import"))
                summary.human_cuts += bool(human and held)
                held = human
            summary.labelled_ticks += bool(human)
            ticks.append((t, cams, ovs))
        summary.ticks += len(ticks)
        plans.append((str(sid), room, tick_s, ticks))
    _refuse_known_sessions(settings, [p[0] for p in plans])
    if dry_run:
        return summary
    wall0 = time.time()
    with FeatureLog(settings.spool_dir, [CAMERA_TICKS, DECISIONS, OVERRIDES]) as flog:
        for sid, room, tick_s, ticks in plans:
            core = DirectorCore(sid, policy=policy or settings.policy, tick_s=tick_s, room=room, sink=flog,
                                variant="import")
            for t, cams, ovs in ticks:
                core.tick(t, cams, ovs, ts=wall0 + t)
            flog.maybe_rotate()
    summary.written = True
    from .direct import ship_if_embedded

    problem = ship_if_embedded(settings)
    if problem:
        raise ImportFileError(problem)
    return summary
