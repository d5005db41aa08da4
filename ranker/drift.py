"""Simulated vs real features: does the simulator produce what the real analysis of media produces?

A ranker trained on simulated sessions is only as good on real footage as the simulator's features are like the real
analysis's. `feature_drift` compares, feature by feature, simulated camera_ticks rows with the real-media set's
(runtime/realset.py: recorded conversations run through `aiobs direct`'s analysis):

- `coverage`: the share of real values inside the simulated range (its 0.5-99.5% quantiles, widened by `tol` of
  that range, at least `abs_tol`). A feature whose real values fall outside what the simulator ever produces is
  one a model has never seen: its trees extrapolate on real footage.
- `median_inside`: the real median lies between the simulated 5% and 95% quantiles (the simulator's typical values
  include the real typical value, not just its tails).
- `null_covered`: where the real analysis leaves a feature NULL (a stage that was off: no VLM configured), some
  simulated sessions have it NULL throughout too (a model learns to direct without it).
- `ks`: the Kolmogorov-Smirnov distance, for reading (randomised simulation is wider than any one real setup, so a
  large KS alone is not a failure).

`ok` is what tests/test_drift.py holds the simulator to, feature by feature; the exploration notebook shows the same
table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_COVERAGE = 0.9  # at least this share of real values inside the simulated range


def _values(df: pd.DataFrame, f: str) -> np.ndarray:
    if f not in df:
        return np.array([], dtype=float)
    return pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if not len(a) or not len(b):
        return float("nan")
    grid = np.union1d(a, b)
    cdf_a, cdf_b = np.searchsorted(a, grid, "right") / len(a), np.searchsorted(b, grid, "right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _all_null_sessions(df: pd.DataFrame, f: str) -> float:
    if f not in df or "session_id" not in df or df.empty:
        return 0.0
    return float(df[f].isna().groupby(df["session_id"]).all().mean())


def feature_drift(sim: pd.DataFrame, real: pd.DataFrame, features=None, tol: float = 0.05,
                  abs_tol: float = 1e-6) -> pd.DataFrame:
    """One row per feature: null rates, medians, simulated 5/95% quantiles, coverage, median_inside, null_covered,
    ks, `sim_missing` (the simulated rows have no such column), and `ok` (present, coverage >= MIN_COVERAGE,
    median_inside and null_covered; a feature the real set never observes is ok on its null coverage alone).
    TypeError/ValueError for input that is not two non-empty DataFrames or names unknown features."""
    from features.extract import RANKER_FEATURES

    for name, df in (("sim", sim), ("real", real)):
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"feature_drift: {name} must be a DataFrame of camera_ticks rows, not "
                            f"{type(df).__name__} (for the real-media set: pd.concat(s.camera_ticks for s in sessions))")
        if df.empty:
            raise ValueError(f"feature_drift: no {name} rows to compare")
    unknown = [f for f in features or () if f not in RANKER_FEATURES]
    if unknown:
        raise ValueError(f"feature_drift: unknown feature(s) {unknown}; the ranker's are {list(RANKER_FEATURES)}")
    rows = []
    for f in features or RANKER_FEATURES:
        a, b = _values(sim, f), _values(real, f)
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
        real_null = float(np.mean(~np.isfinite(b))) if len(b) else 1.0
        null_sessions = _all_null_sessions(sim, f)
        row = {"feature": f, "sim_missing": f not in sim, "sim_null": float(np.mean(~np.isfinite(a))) if len(a) else 1.0, "real_null": real_null,
               "sim_all_null_sessions": null_sessions,
               "sim_median": float(np.median(fa)) if len(fa) else np.nan,
               "real_median": float(np.median(fb)) if len(fb) else np.nan,
               "sim_q05": np.nan, "sim_q95": np.nan, "coverage": np.nan, "median_inside": True,
               "null_covered": real_null < 0.5 or null_sessions > 0, "ks": ks_distance(a, b)}
        if len(fa) and len(fb):
            lo, q05, q95, hi = np.quantile(fa, [0.005, 0.05, 0.95, 0.995])
            pad = max(tol * (hi - lo), abs_tol)
            row.update(sim_q05=float(q05), sim_q95=float(q95),
                       coverage=float(np.mean((fb >= lo - pad) & (fb <= hi + pad))),
                       median_inside=bool(q05 - pad <= np.median(fb) <= q95 + pad))
        elif len(fb):  # the real analysis produces values the simulator never does
            row.update(coverage=0.0, median_inside=False)
        row["ok"] = bool(not row["sim_missing"] and row["null_covered"] and row["median_inside"]
                         and (np.isnan(row["coverage"]) or row["coverage"] >= MIN_COVERAGE))
        rows.append(row)
    return pd.DataFrame(rows)
