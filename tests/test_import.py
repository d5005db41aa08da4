"""`aiobs import FILE.parquet`: a data scientist's own labelled sessions, through the director core, into ClickHouse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runtime.importer import ImportFileError, import_file
from runtime.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def sessions(n_ticks=100, cams=("a", "b", "c"), n_sessions=2, seed=0) -> pd.DataFrame:
    """The human follows whoever speaks (a new speaker every 20 ticks); the last 10 ticks are unlabelled."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_sessions):
        for k in range(n_ticks):
            speaker = cams[(k // 20 + s) % len(cams)]
            human = speaker if k < n_ticks - 10 else None
            for c in cams:
                talking = c == speaker
                rows.append({"session_id": f"ext-{s}", "t": round(k * 0.2, 3), "camera_id": c,
                             "speech_prob": float(0.9 if talking else rng.uniform(0, 0.2)),
                             "audio_rel_db": 0.0 if talking else float(-rng.uniform(8, 20)),
                             "largest_face_area": float(rng.uniform(0.02, 0.08)), "people_count": 1,
                             "speaking": talking, "human_camera": human})
    return pd.DataFrame(rows)


def test_import_writes_labelled_sessions_the_training_data_reads_back(tmp_path, data_dir):
    from features.store import FeatureStore
    from ranker.dataset import load_ranking_data

    df = sessions()
    f = tmp_path / "mine.parquet"
    df.to_parquet(f)
    settings = load_settings(env={}, data_dir=data_dir)
    dry = import_file(f, settings, dry_run=True)
    assert not dry.written and dry.sessions == 2 and dry.ticks == 200 and dry.human_cuts == 8
    assert "speech_prob" in dry.features_present and "vlm_interest" in dry.features_missing
    with FeatureStore(settings.clickhouse_dsn) as store:
        store.ensure_schema()
        assert store.count("camera_ticks") == 0  # a dry run writes nothing
    s = import_file(f, settings)
    assert s.written
    with FeatureStore(settings.clickhouse_dsn) as store:
        assert store.count("camera_ticks") == 600 and store.count("decisions") == 200
        data = load_ranking_data(store)
    labelled = df[df["human_camera"].notna()].drop_duplicates(["session_id", "t"])
    want = {(r.session_id, round(r.t, 3)): r.human_camera for r in labelled.itertuples()}
    got = {(str(sid), round(float(t), 3)): str(h) for sid, t, h in zip(data.session, data.t, data.human)}
    assert got == want  # every labelled tick, with the human's camera; the unlabelled ones are not used
    with FeatureStore(settings.clickhouse_dsn) as store:  # the temporal context was computed on import, by the core
        rows = store.frame("camera_ticks")
    from features.extract import TEMPORAL_FEATURES
    from features.temporal import temporal_columns

    assert rows[list(TEMPORAL_FEATURES)].notna().all().all() and rows["speech_run_s"].max() > 1.0
    np.testing.assert_array_equal(temporal_columns(rows).to_numpy(), rows[list(TEMPORAL_FEATURES)].to_numpy(np.float32))
    with pytest.raises(ImportFileError, match="already in the feature log"):  # labels never count twice
        import_file(f, settings)
    with FeatureStore(settings.clickhouse_dsn) as store:
        assert store.count("camera_ticks") == 600


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d.drop(columns=["camera_id"]), "missing required column"),
    (lambda d: d.assign(spech_prob=0.5), "unknown column"),
    (lambda d: d.assign(since_spoke_s=1.0), "computed on import"),
    (lambda d: d.drop(columns=["human_camera"]), "no label"),
    (lambda d: d.assign(t=np.where(np.arange(len(d)) == 7, np.nan, d["t"])), "row 7: t must be a finite"),
    (lambda d: d.assign(speech_prob=np.where(np.arange(len(d)) == 4, np.inf, d["speech_prob"])), "row 4: feature"),
    (lambda d: pd.concat([d, d.iloc[[3]]]), "a second row"),
    (lambda d: d.assign(human_camera=np.where(np.arange(len(d)) < 3, "zz", d["human_camera"])), "has no row"),
    (lambda d: d.assign(people_count=np.where(np.arange(len(d)) == 2, 1.5, d["people_count"])), "is a count"),
    (lambda d: d.assign(speech_prob=np.where(np.arange(len(d)) == 5, np.nan, d["speech_prob"])), "row 5: feature"),
    (lambda d: d.assign(speech_prob=d["speech_prob"].astype(str)), "must be numbers"),
    # read as the wrong value before: "false" was stored as speaking=True; string times crashed; 42 passed
    (lambda d: d.assign(speaking=d["speaking"].map({True: "true", False: "false"})),
     "row 0: speaking must be true/false"),
    (lambda d: d.assign(t=d["t"].astype(str)), "column t must be numbers"),
    (lambda d: d.assign(speech_prob=np.where(np.arange(len(d)) == 6, 42.0, d["speech_prob"])),
     r"row 6: feature speech_prob is 42.0, outside its range 0..1"),
    (lambda d: d.assign(audio_rel_db=np.where(np.arange(len(d)) == 1, 30.0, d["audio_rel_db"])),
     "row 1: feature audio_rel_db"),
    (lambda d: d.assign(speech_mask=np.where(np.arange(len(d)) == 3, 300, 0)), "row 3: speech_mask must be a whole"),
])
def test_a_file_that_breaks_the_contract_is_refused_and_nothing_is_written(tmp_path, data_dir, break_it, message):
    from features.store import FeatureStore

    f = tmp_path / "bad.parquet"
    break_it(sessions(n_ticks=30, n_sessions=1)).to_parquet(f)
    settings = load_settings(env={}, data_dir=data_dir)
    with pytest.raises(ImportFileError, match=message):
        import_file(f, settings)
    with FeatureStore(settings.clickhouse_dsn) as store:
        store.ensure_schema()
        assert store.count("camera_ticks") == 0


def test_the_cli_checks_a_file_and_says_what_is_wrong(tmp_path, data_dir):
    good, corrupt = tmp_path / "good.parquet", tmp_path / "corrupt.parquet"
    sessions(n_ticks=30, n_sessions=1).to_parquet(good)
    corrupt.write_bytes(b"PAR1 this is not parquet")
    run = [sys.executable, "-m", "runtime.cli", "--data-dir", str(data_dir), "import"]
    ok = subprocess.run(run + [str(good), "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0 and "dry run, nothing written" in ok.stdout and "1 session(s), 30 ticks" in ok.stdout
    bad = subprocess.run(run + [str(corrupt)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 1 and "not a readable parquet" in bad.stderr and "Traceback" not in bad.stderr
