"""A/B from live evidence, end to end: simulated live sessions go through the real runtime path (the director core
fed by the simulator, a model manager following an `mlflow server` started here, a simulated operator overriding
when the program is not what it wants, the real spool shipped into ClickHouse), and the A/B report decides.

Three registered rankers: a speech follower (the champion), a ranker trained on the hidden director's choices
(better), and one trained on their opposite (worse). The truth of each arm is measured by letting each model direct
every session of the phase alone; the report's intervals must contain it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from features.shipper import SegmentShipper
from features.spool import FeatureLog
from features.schema import TABLES
from features.store import FeatureStore
from ranker.ab import ABConfig, compare, evaluate_live, session_outcomes
from ranker.core import DirectorCore
from ranker.registry import CHALLENGER, CHAMPION, MODEL_NAME, Gate, promote, register
from ranker.simulate import SimConfig, operate, session_frames
from runtime.model_manager import ModelManager
from runtime.rig import free_port

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400.0
# phase 1 the day before yesterday, phase 2 yesterday (a complete Dagster partition), phase 3 just after the test's
# own promotions (a registry move is stamped with the wall clock: "since the promotion" must be after it)
T1 = (time.time() // DAY - 2) * DAY
SESSIONS = 12
SIM = SimConfig(duration_s=120.0)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{d / 'mlflow.db'}", "--artifacts-destination", str(d / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=open(d / "server.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=d)
    url = f"http://127.0.0.1:{port}"
    from tests.test_data_scientist import _wait_http

    _wait_http(url + "/health", proc, d / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, mlflow_server):
    """The three rankers, registered: v1 speech follower (champion), v2 better (challenger), v3 worse (later)."""
    from ranker.dataset import load_ranking_data
    from ranker.simulate import simulate
    from ranker.train import train_ranker

    d = tmp_path_factory.mktemp("ab")
    dsn = f"chdb://{d / 'clickhouse'}"
    with FeatureStore(dsn) as store:
        store.ensure_schema()
        simulate(store, 8, SimConfig(duration_s=120.0), seed=1, prefix="train")
        data = load_ranking_data(store)
        store.client.command("TRUNCATE TABLE camera_ticks")  # the A/B evidence starts from an empty log
        store.client.command("TRUNCATE TABLE decisions")
        store.client.command("TRUNCATE TABLE overrides")
    boosters = {"speech": train_ranker(dataclasses.replace(data, y=data.speaking.astype(np.float32)), rounds=30),
                "better": train_ranker(data, rounds=30),
                "worse": train_ranker(dataclasses.replace(data, y=1.0 - data.y), rounds=30)}
    m = {"cut_top1": 0.0, "replay_frame_agreement": 0.0, "replay_ping_pong": 0, "replay_cuts_in_speech": 0}
    versions = {}
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    for name in ("speech", "better"):
        versions[name] = register(boosters[name], tracking_uri=mlflow_server, artifacts_dir=None, metrics=m,
                                  reference=m, reference_name="itself", params={"ranker": name},
                                  gate=Gate(margin=1.0)).version  # registered as challenger, never promoted here
        versions[name] = str(versions[name])
        if name == "speech":
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, versions[name])
    return {"dir": d, "dsn": dsn, "uri": mlflow_server, "boosters": boosters, "versions": versions,
            "spool": d / "spool"}


def _run_phase(lab, prefix: str, t0: float, models: ModelManager, n: int = SESSIONS) -> list[dict]:
    """n simulated live sessions through the director core (rows to the spool), then shipped to ClickHouse."""
    out = []
    with FeatureLog(lab["spool"], TABLES.values()) as flog:
        for i in range(n):
            frames = session_frames(SIM, seed=21, index=i, prefix=prefix, t0=t0)
            sid = str(frames["decisions"]["session_id"].iloc[0])
            core = DirectorCore(sid, rankers=models, tick_s=0.2, sink=flog, room="sim-room")
            out.append(operate(frames, core))
    with FeatureStore(lab["dsn"]) as store:
        assert SegmentShipper(lab["spool"], store).ship_once().error is None
    return out


def _truth(lab, prefix: str, t0: float, booster) -> float:
    """Overrides per minute when this model alone directs every session of the phase (no A/B, no log)."""
    from ranker.xgb import XGBoostRanker

    ranker = XGBoostRanker(booster, version="truth")
    overrides = minutes = 0.0
    for i in range(SESSIONS):
        frames = session_frames(SIM, seed=21, index=i, prefix=prefix, t0=t0)
        r = operate(frames, DirectorCore("truth", rankers=ranker, tick_s=0.2, explain=False))
        overrides += r["overrides"]
        minutes += r["ticks"] * 0.2 / 60
    return overrides / minutes


def test_ab_promotes_a_better_challenger_keeps_a_worse_one_also_in_dagster_and_rolls_back_a_bad_champion(lab):
    uri = lab["uri"]
    v = lab["versions"]
    cfg = ABConfig(min_sessions=5, min_minutes=5.0, n_boot=1000, auto_promote=True)

    # -- phase 1: the better challenger in alternating 30 s blocks, the other arm in the shadow ------------------------
    mm = ModelManager(uri, challenger_share=0.5, ab_unit="block", ab_block_s=30.0, shadow=True)
    assert mm.refresh() == {CHAMPION: v["speech"], CHALLENGER: v["better"]}
    _run_phase(lab, "ab1", T1, mm)
    with FeatureStore(lab["dsn"]) as store:
        res = evaluate_live(store, uri, cfg, T1, T1 + DAY, who="test")
        shadow = store.frame("shadow_decisions", start=T1, end=T1 + DAY)
        acted = store.frame("decisions", start=T1, end=T1 + DAY)
    rep = res["report"]
    assert rep.enough and rep.sessions == {CHAMPION: SESSIONS, CHALLENGER: SESSIONS}, rep.as_dict()
    assert rep.recommendation == "promote", (rep.reason, rep.table())
    assert set(rep.metrics) == {"overrides_per_min", "overruled_share", "switches_per_min", "ping_pong_per_min",
                                "mid_word_per_min", "reaction_s", "tick_latency_ms"}, rep.as_dict()
    assert 0 < rep.metrics["reaction_s"].champion < 5 and 0 < rep.metrics["tick_latency_ms"].champion < 200
    assert res["actions"][0].startswith(f"promoted v{v['better']} over v{v['speech']}")
    # the intervals contain the simulated truth (each model directing every session alone)
    truth = {CHAMPION: _truth(lab, "ab1", T1, lab["boosters"]["speech"]),
             CHALLENGER: _truth(lab, "ab1", T1, lab["boosters"]["better"])}
    m = rep.metrics["overrides_per_min"]
    assert m.champion_ci[0] <= truth[CHAMPION] <= m.champion_ci[1], (truth, rep.as_dict())
    assert m.challenger_ci[0] <= truth[CHALLENGER] <= m.challenger_ci[1], (truth, rep.as_dict())
    assert m.diff_ci[0] <= truth[CHALLENGER] - truth[CHAMPION] <= m.diff_ci[1], (truth, rep.as_dict())
    # shadow rows: every tick, the arm that did not act, marked as such
    assert len(shadow) == len(acted) and (shadow["ab_variant"] != shadow["acted_variant"]).all()
    merged = acted.merge(shadow, on=["session_id", "tick"], suffixes=("", "_shadow"))
    assert (merged["ab_variant"] == merged["acted_variant"]).all()
    assert (merged["model_version"] != merged["model_version_shadow"]).all()  # the other model, every tick
    differ = (merged["program_camera"] != merged["program_camera_shadow"]).mean()
    assert 0.05 < differ < 0.95, differ  # a real alternative: it would often have shown something else
    assert set(shadow["model_version"]) == {f"{MODEL_NAME}/{v['speech']}", f"{MODEL_NAME}/{v['better']}"}

    # -- phase 2: a worse challenger is not promoted ---------------------------------------------------------------
    from mlflow import MlflowClient

    m3 = {"cut_top1": 0.0, "replay_frame_agreement": 0.0, "replay_ping_pong": 0, "replay_cuts_in_speech": 0}
    v["worse"] = register(lab["boosters"]["worse"], tracking_uri=uri, artifacts_dir=None, metrics=m3, reference=m3,
                          reference_name="itself", params={"ranker": "worse"}, gate=Gate(margin=1.0)).version
    v["worse"] = str(v["worse"])
    mm = ModelManager(uri, challenger_share=0.5, ab_unit="block", ab_block_s=30.0)
    assert mm.refresh() == {CHAMPION: v["better"], CHALLENGER: v["worse"]}
    _run_phase(lab, "ab2", T1 + DAY, mm)
    with FeatureStore(lab["dsn"]) as store:
        res = evaluate_live(store, uri, cfg, T1 + DAY, T1 + 2 * DAY, who="test")
    rep = res["report"]
    assert rep.recommendation == "keep" and rep.metrics["overrides_per_min"].significantly_worse, rep.as_dict()
    assert res["actions"] == [] and str(MlflowClient(uri).get_model_version_by_alias(MODEL_NAME, CHAMPION).version) \
        == v["better"]
    _dagster_ab_report(lab, T1 + DAY)  # the same day through the Dagster asset
    shots = Path(os.environ.get("TEST_SCREENSHOTS_DIR") or lab["dir"])
    text = _dagster_page_shows_the_report(lab, T1 + DAY, shots)  # and on `./dev.sh dagster`'s asset page
    assert "keep" in text and (shots / "dagster_ab_report.png").stat().st_size > 20_000

    # -- phase 3: the worse model becomes champion by hand; its live override rate rises: rolled back ----------------
    promote(uri, v["worse"], "a hasty manual promotion", who="test")
    mm = ModelManager(uri, challenger_share=0.0)
    assert mm.refresh()[CHAMPION] == v["worse"]
    _run_phase(lab, "ab3", time.time() + 60, mm, n=6)
    with FeatureStore(lab["dsn"]) as store:  # yesterday holds its predecessor's sessions as champion
        res = evaluate_live(store, uri, cfg, T1 + DAY, time.time() + DAY, who="test")
    assert res["actions"] and res["actions"][0].startswith(f"rolled back champion v{v['worse']} -> v{v['better']}")
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == v["better"]
    desc = client.get_model_version(MODEL_NAME, v["worse"]).description or ""
    assert "A/B guardrail" in desc and "override rate rose" in desc, desc


def test_shadow_mode_never_changes_the_program(lab):
    mm = ModelManager(lab["uri"], challenger_share=0.5, ab_unit="block", ab_block_s=30.0)
    mm.refresh()
    frames = session_frames(SIM, seed=5, index=0, prefix="shadow", t0=T1 + 5 * DAY)
    programs = []
    for shadow in (False, True):
        mm.shadow = shadow
        core = DirectorCore("shadow-session", rankers=mm, tick_s=0.2)
        seen = []
        orig = core.tick

        def tick(*a, **k):
            r = orig(*a, **k)
            seen.append((r.decision.program, r.decision.reason, r.variant, r.shadow is not None))
            return r

        core.tick = tick
        operate(frames, core)
        programs.append(seen)
    assert [p[:3] for p in programs[0]] == [p[:3] for p in programs[1]]
    assert not any(p[3] for p in programs[0]) and all(p[3] for p in programs[1])


def test_a_failing_shadow_model_never_stops_the_director():
    from ranker.baseline import WeightedBaselineRanker

    class Broken:
        version = "broken"

        def score(self, x):
            raise RuntimeError("shadow model exploded")

    class Source:
        def ranker_for(self, session_id, t=None):
            return "champion", WeightedBaselineRanker()

        def shadow_for(self, session_id, t=None):
            return "challenger", Broken()

    frames = session_frames(SimConfig(duration_s=20.0), seed=5, index=1, prefix="broken", t0=T1)
    rows = []

    class Sink:
        def append(self, table, row):
            rows.append(table)

    out = operate(frames, DirectorCore("broken-shadow", rankers=Source(), tick_s=0.2, sink=Sink()))
    assert out["ticks"] == 100 and rows.count("decisions") == 100 and "shadow_decisions" not in rows


def test_operator_actions_are_not_the_directors_switches():
    import pandas as pd

    d = pd.DataFrame({"session_id": "s", "tick": range(6), "t": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                      "program_camera": ["a", "b", "a", "a", "b", "b"], "cut": [True, True, True, False, True, False],
                      "from_camera": ["", "a", "b", "", "a", ""], "to_camera": ["a", "b", "a", "", "b", ""],
                      "reason": ["start", "delta", "override_take", "hold", "delta", "hold"], "cut_at": None,
                      "transition": "cut", "model_version": "m", "ab_variant": "champion", "latency_ms": 1.0})
    o = pd.DataFrame({"session_id": "s", "tick": [2, 3], "t": [0.4, 0.6], "camera_id": ["a", ""],
                      "action": ["take", "release"]})
    (row,) = session_outcomes(d, o).to_dict("records")
    assert row["cuts"] == 2 and row["ping_pong"] == 0  # a -> b by the director, back to a by the operator
    assert row["overrides"] == 1 and row["overruled_s"] == pytest.approx(0.2)  # the release is no correction
    assert row["latency_ticks"] == 6 and row["minutes"] == pytest.approx(6 * 0.2 / 60)


def test_the_report_waits_for_enough_evidence_and_guardrails_block_a_promotion():
    import pandas as pd

    rows = []
    rng = np.random.default_rng(0)
    for s in range(8):
        for arm, rate, pp in (("champion", 4.0, 0.2), ("challenger", 2.0, 3.0)):  # fewer overrides, more ping-pong
            rows.append({"session_id": f"s{s}-{arm}", "variant": arm, "model_version": arm, "minutes": 5.0,
                         "overrides": rng.poisson(rate * 5), "overruled_s": 10.0, "cuts": 30,
                         "ping_pong": rng.poisson(pp * 5), "mid_word": 0})
    df = pd.DataFrame(rows)
    rep = compare(df, n_boot=500)
    assert rep.metrics["overrides_per_min"].significantly_better and rep.recommendation == "keep"
    assert "ping_pong_per_min" in rep.reason
    few = compare(df[df["session_id"].str[1].astype(int) < 3], n_boot=500)
    assert few.recommendation == "wait" and not few.enough and "3 sessions" in few.reason
    assert compare(df[df["variant"] == "champion"]).recommendation == "wait"
    assert "reaction_s" not in rep.metrics  # no evidence for it in these rows: left out, not reported as 0
    assert session_outcomes(df.iloc[:0]).empty


def _dagster_ab_report(lab, day_t: float) -> None:
    """The Dagster asset on the day-2 partition (better champion, worse challenger): keep, with the table and plot
    as asset metadata and the plot + report as MLflow artifacts on the challenger's version."""
    from datetime import datetime, timezone

    from dagster import materialize
    from mlflow import MlflowClient

    from pipelines import assets
    from pipelines.resources import default_resources
    from runtime.settings import load_settings

    day = datetime.fromtimestamp(day_t, timezone.utc).strftime("%Y-%m-%d")
    settings = load_settings(env={}, data_dir=lab["dir"] / "data", clickhouse_dsn=lab["dsn"],
                             mlflow_tracking_uri=lab["uri"], spool_dir=str(lab["spool"]))
    res = materialize([assets.ab_report], resources=default_resources(settings), partition_key=day,
                      run_config={"ops": {"ab_report": {"config": {"min_minutes": 5.0, "n_boot": 500}}}})
    assert res.success
    meta = res.asset_materializations_for_node("ab_report")[0].metadata
    assert meta["recommendation"].value == "keep" and meta["enough_evidence"].value is True
    assert "overrides_per_min" in meta["metrics"].value and "data:image/png;base64," in meta["plot"].value
    assert meta["sessions"].value == {CHAMPION: SESSIONS, CHALLENGER: SESSIONS}
    client = MlflowClient(lab["uri"])
    run_id = client.get_model_version(MODEL_NAME, lab["versions"]["worse"]).run_id
    logged = [a.path for a in client.list_artifacts(run_id, f"ab_report/{day}")]
    assert sorted(Path(p).name for p in logged) == [f"ab_{day}.png", "report.json"], logged
    assert meta["mlflow_artifacts"].value == f"runs:/{run_id}/ab_report/{day}"


def _dagster_page_shows_the_report(lab, day_t: float, shots: Path) -> str:
    """`./dev.sh dagster` on the data dir whose Dagster home holds the ab_report materialization: the asset page in
    headless Chromium shows the recommendation, and the plot opens as an image. Returns the page text."""
    import shutil
    import signal
    from datetime import datetime, timezone

    from dagster import DagsterInstance, materialize
    from playwright.sync_api import sync_playwright

    from pipelines import assets
    from pipelines.resources import default_resources
    from runtime.settings import load_settings
    from tests.test_control_page import CHROMIUM, CHROMIUM_ARGS
    from tests.test_data_scientist import _screenshot, _start, _stop, _wait_http

    data = lab["dir"] / "data"
    home = data / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    day = datetime.fromtimestamp(day_t, timezone.utc).strftime("%Y-%m-%d")
    env = {**os.environ, "AIOBS_DATA_DIR": str(data), "AIOBS_CLICKHOUSE_DSN": lab["dsn"],
           "AIOBS_MLFLOW_TRACKING_URI": lab["uri"], "AIOBS_SPOOL_DIR": str(lab["spool"])}
    settings = load_settings(env={k: v for k, v in env.items() if k.startswith("AIOBS_")})
    with DagsterInstance.from_config(str(home)) as instance:
        res = materialize([assets.ab_report], resources=default_resources(settings), partition_key=day,
                          instance=instance,
                          run_config={"ops": {"ab_report": {"config": {"min_minutes": 5.0, "n_boot": 500}}}})
    assert res.success
    port = free_port()
    log = lab["dir"] / "dagster.log"
    proc = _start([str(ROOT / "dev.sh"), "dagster"], {**env, "PORT": str(port)}, log)
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            text = _screenshot(page, f"http://127.0.0.1:{port}/assets/ab_report", ["Latest materialization",
                               "recommendation"], shots / "dagster_ab_report.png", dismiss=["Skip"])
            page.get_by_text("[Show Markdown]").first.wait_for(timeout=30_000)
            shown = 0
            for link in page.get_by_text("[Show Markdown]").all():  # the metrics table and the plot
                link.click()
                page.wait_for_timeout(500)
                shown += page.locator("img[src^='data:image/png']").count()
                page.keyboard.press("Escape")
            page.get_by_text("[Show Markdown]").last.click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "dagster_ab_report_plot.png"))
            browser.close()
    finally:
        _stop(proc, signal.SIGTERM)
    assert shown >= 1, "the plot is not an image on the asset page"
    return text
