"""The simulator against the real analysis: every ranker feature the simulator produces covers what the real analysis
of recorded conversations produces (ranker/drift.py), feature by feature, so a model trained on simulated sessions is
never asked about values it has not seen. The idealised simulator (every stage on, clean mics) does not: the check can
fail, and did before the analysis setup was drawn per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.store import FeatureStore
from ranker.drift import MIN_COVERAGE, feature_drift
from ranker.simulate import HiddenDirector, SimConfig, simulate
from runtime.realset import real_sessions
from runtime.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
REALSET = ROOT / ".cache" / "realset"  # shared with tests/test_pipelines.py (built once, about 100 s)


@pytest.fixture(scope="module")
def real():
    return pd.concat([s.camera_ticks for s in real_sessions(REALSET)], ignore_index=True)


def simulated(tmp_path, sensors: str, sessions: int = 12, seed: int = 5) -> pd.DataFrame:
    settings = load_settings(env={}, data_dir=tmp_path / sensors)
    settings.ensure_dirs()
    with FeatureStore(settings.clickhouse_dsn) as store:
        simulate(store, sessions, SimConfig(duration_s=120, director=HiddenDirector(family="mixed"), sensors=sensors),
                 seed=seed)
        return store.frame("camera_ticks")


@pytest.mark.parametrize("seed", [5, 6, 7, 8])  # any dozen sessions, not one lucky draw
def test_every_simulated_feature_covers_the_real_analysis(tmp_path, real, seed):
    drift = feature_drift(simulated(tmp_path, "varied", seed=seed), real)
    from features.extract import RANKER_FEATURES

    assert list(drift["feature"]) == list(RANKER_FEATURES)
    bad = drift[~drift["ok"]]
    assert bad.empty, bad.round(3).to_string()
    observed = drift[drift["real_null"] < 1]
    assert (observed["coverage"] >= MIN_COVERAGE).all() and observed["median_inside"].all()
    # the real analysis here runs without a VLM: simulated sessions without one exist, and say so
    assert drift.set_index("feature").loc["vlm_interest", "sim_all_null_sessions"] > 0


def test_the_idealised_simulator_fails_the_check(tmp_path, real):
    drift = feature_drift(simulated(tmp_path, "ideal", sessions=6), real).set_index("feature")
    # close-ups that fill the frame and a deployment without a VLM: never seen by a model trained on ideal sessions
    assert not drift.loc["largest_person_area", "ok"] and not drift.loc["vlm_interest", "null_covered"]


def test_drift_refuses_what_it_cannot_compare(tmp_path, real):
    sim = simulated(tmp_path, "varied", sessions=2)
    with pytest.raises(TypeError, match="DataFrame"):  # e.g. the RealSession list itself
        feature_drift(sim, real_sessions(REALSET))
    with pytest.raises(ValueError, match="no sim rows"):
        feature_drift(sim.iloc[:0], real)
    with pytest.raises(ValueError, match="unknown feature"):
        feature_drift(sim, real, features=["crowd_roar"])
    gone = feature_drift(sim.drop(columns=["face_count"]), real).set_index("feature").loc["face_count"]
    assert gone["sim_missing"] and not gone["ok"]  # a missing column is not an all-NULL one


def test_a_sessions_sensors_are_consistent_and_logged(tmp_path):
    ticks = simulated(tmp_path, "varied", sessions=10)
    for _, g in ticks.groupby("session_id"):
        degraded = g["degraded"].iloc[0]
        degraded = dict(degraded) if not isinstance(degraded, dict) else degraded
        vlm_off = g["vlm_interest"].isna().all()
        assert vlm_off == ("vlm" in degraded)  # a stage that was off says so, as the real analysis's rows do
        if "asr" in degraded:
            assert (g["asr_words_per_s"] == 0).all() and (g["keyword_hits"] == 0).all()
        nobody = g["people_count"] == 0  # nobody in the frame: no box, no track, no subject motion
        assert (g.loc[nobody, ["largest_person_area", "person_centrality", "track_continuity",
                               "subject_motion"]].to_numpy() == 0).all()
        assert ((g["face_count"] == 0) == (g["largest_face_area"] == 0)).all()
    assert ticks.groupby("session_id")["vlm_interest"].apply(lambda v: v.isna().all()).nunique() == 2
    assert np.isfinite(ticks["subject_motion"].astype(float)).all() and ticks["subject_motion"].max() > 0
