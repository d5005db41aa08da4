"""`aiobs model list|promote|rollback`: the registry seen and changed by hand, every champion move audited on the
MLflow versions (tag `audit`, description), the gate's own decision included; rollback after a manual or an automatic
promotion; "not found" errors that name the store; the training run named after its version; registry labels on
rankers loaded from models:/ URIs.

One real MLflow sqlite store is built per module (three tiny boosters: v1 and v2 promoted by the gate, v3 stays
challenger); each test works on its own copy of the database (the artifacts are shared, read only).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from features.extract import RANKER_FEATURES
from ranker.base import RankerError
from ranker.registry import (AUDIT_TAG, CHALLENGER, CHAMPION, MODEL_NAME, PREVIOUS_CHAMPION_TAG, RUN_NAME_TAG, Gate,
                             client_for, git_revision, list_versions, register)
from ranker.xgb import XGBoostRanker, stamp_booster
from runtime.cli import main
from runtime.models_cli import DEFAULT_NAME
from runtime.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
POLICY = {"min_hold_s": 2.0, "cooldown_s": 4.0, "delta": 0.15, "dwell_s": 0.6, "hold_speaker": True,
          "max_shot_s": 30.0}
BASE = {"cut_top1": 0.5, "replay_frame_agreement": 0.5, "replay_ping_pong": 0, "replay_cuts_in_speech": 0}


def _booster(label: str, seed: int, policy: dict | None = None):
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.random((24, len(RANKER_FEATURES)), dtype=np.float32)
    booster = xgb.train({"nthread": 1, "max_depth": 2}, xgb.DMatrix(x, rng.random(24)), num_boost_round=2)
    return stamp_booster(booster, list(RANKER_FEATURES), model_version=label, policy=policy)


def _settings(data_dir: Path):
    s = load_settings(env={}, data_dir=data_dir)
    s.ensure_dirs()
    return s


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store with v1 (promoted by the gate), v2 (promoted by the gate over v1), v3 (stays challenger)."""
    import mlflow.models

    data = tmp_path_factory.mktemp("template") / "data"
    s = _settings(data)
    uri, art = s.mlflow_tracking_uri, s.mlflow_artifacts_dir
    regs = []
    mp = pytest.MonkeyPatch()
    # MLflow infers the model's pip requirements in a subprocess (~5 s a model): not what these tests are about
    mp.setattr(mlflow.models, "infer_pip_requirements", lambda path, flavor, fallback=None, **kw: list(fallback or []))
    for i, (metrics, gate, policy) in enumerate([
            (BASE, Gate(margin=0.0, require_real=False), POLICY),
            ({**BASE, "cut_top1": 0.61, "real_speaker_follow": 0.8}, Gate(margin=0.0, require_real=False), None),
            ({**BASE, "cut_top1": 0.55}, Gate(margin=1.0, require_real=False), POLICY)], start=1):
        learned = {k: v for k, v in POLICY.items() if k != "max_shot_s"} if i == 3 else None  # v1: the front door's
        regs.append(register(_booster(f"xgb-tiny-{i}", i, learned), tracking_uri=uri, artifacts_dir=art,
                             metrics=metrics,
                             reference=BASE, reference_name="baseline", params={"i": i}, gate=gate,
                             policy_config=policy, run_tags={"optuna.study": "tiny-study", "git.revision": "abc123",
                                                             "dagster.run_id": f"run-{i}"}))
    mp.undo()
    assert [r.promoted for r in regs] == [True, True, False]
    return data, regs


@pytest.fixture
def store(template, tmp_path):
    """This test's own copy of the template's registry database: (data_dir, tracking_uri, registrations)."""
    data, regs = template
    mine = tmp_path / "data"
    src = _settings(data).mlflow_tracking_uri[len("sqlite:///"):]
    s = _settings(mine)
    dst = s.mlflow_tracking_uri[len("sqlite:///"):]
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return mine, s.mlflow_tracking_uri, regs


def _cli(data_dir: Path, *argv: str) -> int:
    return main(["--data-dir", str(data_dir), "model", *argv])


def _mv(uri: str, version: str):
    return client_for(uri).get_model_version(MODEL_NAME, version)


def _aliases(uri: str) -> dict[str, str]:
    return {a: str(v) for a, v in client_for(uri).get_registered_model(MODEL_NAME).aliases.items()}


def _audit(uri: str, version: str) -> list[dict]:
    return json.loads(_mv(uri, version).tags[AUDIT_TAG])


def test_registration_audits_the_gate_and_names_the_run_after_the_version(store):
    _, uri, regs = store
    assert DEFAULT_NAME == MODEL_NAME
    assert _aliases(uri) == {CHAMPION: "2", CHALLENGER: "3"}
    # the gate's decision is each version's first audit entry
    v1, v2, v3 = (_audit(uri, v) for v in ("1", "2", "3"))
    assert v1[0]["who"] == "gate" and v1[0]["action"] == "gate" and (v1[0]["from"], v1[0]["to"]) == (None, "1")
    assert v1[0]["why"] == regs[0].reason and v1[0]["why"].startswith("promoted")
    assert (v2[0]["from"], v2[0]["to"], v2[0]["who"]) == ("1", "2", "gate")
    assert v1[1] == v2[0]  # the replaced champion records its replacement too
    assert (v3[0]["from"], v3[0]["to"]) == ("2", "2") and v3[0]["why"].startswith("stays challenger")
    datetime.fromisoformat(v3[0]["when"].replace("Z", "+00:00"))
    # an automatic promotion records the champion it replaced (what rollback returns to)
    assert _mv(uri, "2").tags[PREVIOUS_CHAMPION_TAG] == "1" and PREVIOUS_CHAMPION_TAG not in _mv(uri, "1").tags
    assert PREVIOUS_CHAMPION_TAG not in _mv(uri, "3").tags
    assert _mv(uri, "3").description == regs[2].reason  # the gate's reason is the version's description
    assert "- audit " in _mv(uri, "1").description and "gate by gate: champion v1 -> v2" in _mv(uri, "1").description
    # the run is named after the version, and carries the caller's tags
    client = client_for(uri)
    for reg in regs:
        run = client.get_run(reg.run_id)
        assert run.info.run_name == run.data.tags["mlflow.runName"] == f"aiobs-ranker-v{reg.version}"
        assert _mv(uri, reg.version).tags[RUN_NAME_TAG] == f"aiobs-ranker-v{reg.version}"
        assert run.data.tags["optuna.study"] == "tiny-study" and run.data.tags["git.revision"] == "abc123"
        assert run.data.tags["dagster.run_id"] == f"run-{reg.version}" and run.info.status == "FINISHED"
    # the metrics tag carries real-media figures when the evaluation had them
    assert json.loads(_mv(uri, "2").tags["metrics"])["real_speaker_follow"] == 0.8


def test_git_revision_never_raises(tmp_path):
    rev = git_revision(ROOT)
    assert rev == "" or len(rev.removesuffix("-dirty")) == 40
    assert git_revision(tmp_path) == "" and git_revision(tmp_path / "missing") == ""


def test_list_through_the_real_cli_shows_aliases_gate_metrics_and_policy(store):
    data, uri, _ = store
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOBS_", "MLFLOW_"))}
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "--data-dir", str(data), "model", "list"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"aiobs-ranker in {uri}: 3 version(s); champion v2, challenger v3"), lines[0]
    by_version = {ln.split()[0]: ln for ln in lines[1:]}
    assert list(by_version) == ["v3", "v2", "v1"]
    v3, v2, v1 = by_version["v3"], by_version["v2"], by_version["v1"]
    assert v3.split()[1] == "challenger" and v2.split()[1] == "champion" and v1.split()[1] == "-"
    assert "not promoted (cut_top1 0.5500 < baseline" in v3 and "…" in v3  # the gate's reason, shortened
    assert "promoted (cut_top1 0.6100 vs baseline" in v2
    assert "cut_top1 0.55 agreement 0.5" in v3 and "real_follow 0.8" in v2 and "real_follow" not in v3
    # v1's model carries no learned timing (the tuning kept none): its timing is said to be the front door's
    assert "policy (the front door's: no learned timing kept) min_hold_s=2 cooldown_s=4 delta=0.15 dwell_s=0.6 " \
           "hold_speaker=true" in v1
    assert "policy min_hold_s=2 cooldown_s=4" in v3 and "front door" not in v3
    assert "policy" not in v2 and "max_shot_s" not in v1  # the learned timing only
    assert datetime.now(timezone.utc).strftime("%Y-%m-%d") in v1 and "UTC" in v1

    infos = list_versions(uri)
    assert [(i.version, i.aliases, i.promoted) for i in infos] == [
        ("3", [CHALLENGER], False), ("2", [CHAMPION], True), ("1", [], True)]


def test_promote_and_rollback_are_audited_on_both_versions(store, capsys, monkeypatch):
    data, uri, _ = store
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    assert _cli(data, "promote", "v3", "--reason", "better on  the\nreal shows", "--who", "ann") == 0
    out = capsys.readouterr().out
    assert "champion v2 -> v3 (promote by ann" in out and "audited on v3 and v2" in out
    assert _aliases(uri) == {CHAMPION: "3", CHALLENGER: "3"}
    entry = _audit(uri, "3")[-1]
    assert {k: entry[k] for k in ("action", "who", "why", "from", "to")} == {
        "action": "promote", "who": "ann", "why": "better on the real shows", "from": "2", "to": "3"}
    when = datetime.fromisoformat(entry["when"].replace("Z", "+00:00"))
    assert entry["when"].endswith("Z") and before <= when <= datetime.now(timezone.utc)
    assert _audit(uri, "2")[-1] == entry and len(_audit(uri, "3")) == 2  # the gate's entry, then this one
    assert _mv(uri, "3").tags[PREVIOUS_CHAMPION_TAG] == "2"
    desc = _mv(uri, "3").description
    assert desc.startswith("stays challenger") and desc.splitlines()[-1] == (
        f"- audit {entry['when']} promote by ann: champion v2 -> v3: better on the real shows")
    assert "promote by ann: champion v2 -> v3" in _mv(uri, "2").description

    # rollback: undoes the promotion, back to the champion v3 replaced (who defaults to $USER)
    monkeypatch.setenv("USER", "bob")
    assert _cli(data, "rollback", "--reason", "complaints from the floor") == 0
    assert "champion v3 -> v2 (rollback by bob" in capsys.readouterr().out
    assert _aliases(uri)[CHAMPION] == "2"
    promotion, entry = _audit(uri, "3")[-2:]
    assert (entry["action"], entry["who"], entry["why"], entry["from"], entry["to"], entry["undoes"]) == (
        "rollback", "bob", "complaints from the floor", "3", "2", promotion["id"])
    assert _audit(uri, "2")[-1] == entry and "rollback by bob: champion v3 -> v2" in _mv(uri, "2").description
    assert "rollback by bob: champion v3 -> v2" in _mv(uri, "3").description

    # again: undoes the gate's automatic promotion of v2 over v1
    assert _cli(data, "rollback", "--reason", "further back") == 0
    assert _aliases(uri)[CHAMPION] == "1" and _audit(uri, "1")[-1]["from"] == "2"
    capsys.readouterr()

    # v1 replaced no earlier champion: nothing to roll back to, said clearly, nothing moves
    assert _cli(data, "rollback", "--reason", "once more") == 1
    err = capsys.readouterr().err
    assert err.startswith("aiobs model: nothing to roll back to: champion v1") and "--to" in err and uri in err
    assert _aliases(uri)[CHAMPION] == "1"

    # --to: any version (a move the next rollback undoes); history is walked back, never in a cycle
    assert _cli(data, "rollback", "--to", "3", "--reason", "pick v3", "--who", "cy") == 0
    assert _aliases(uri)[CHAMPION] == "3" and _audit(uri, "3")[-1]["from"] == "1"
    assert _cli(data, "promote", "2", "--reason", "v2 after all") == 0
    assert _mv(uri, "2").tags[PREVIOUS_CHAMPION_TAG] == "3"
    champions = []
    for _ in range(2):
        assert _cli(data, "rollback", "--reason", "walk back") == 0
        champions.append(_aliases(uri)[CHAMPION])
    assert champions == ["3", "1"]  # undoes the promotion of v2, then the move to v3
    capsys.readouterr()
    assert _cli(data, "rollback", "--reason", "walk back") == 1  # v1 again: the first champion
    assert "nothing to roll back to: champion v1" in capsys.readouterr().err
    assert _cli(data, "list") == 0
    assert "last rollback by bob" in next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("v1 "))


def test_errors_name_the_store_and_usage_errors_exit_2(store, tmp_path, capsys):
    data, uri, _ = store
    assert _cli(data, "promote", "99", "--reason", "x") == 1
    err = capsys.readouterr().err
    assert err.strip() == f"aiobs model: version 99 of registered model 'aiobs-ranker' not found in {uri}"
    assert _cli(data, "promote", "staging", "--reason", "x") == 1
    assert f"alias 'staging' of registered model 'aiobs-ranker' not found in {uri}" in capsys.readouterr().err
    assert _cli(data, "list", "--name", "other") == 1
    assert f"registered model 'other' not found in {uri}" in capsys.readouterr().err
    assert _cli(data, "promote", "2", "--reason", "x") == 1
    assert "already the champion" in capsys.readouterr().err
    assert _cli(data, "rollback", "--to", "42", "--reason", "x") == 1
    assert "version 42 of registered model" in capsys.readouterr().err
    assert _aliases(uri) == {CHAMPION: "2", CHALLENGER: "3"}  # nothing moved

    assert _cli(data, "promote", "3", "--reason", "   ") == 2
    assert capsys.readouterr().err.startswith("aiobs model: --reason must say why")
    assert _cli(data, "promote", "3/x", "--reason", "x") == 2
    with pytest.raises(SystemExit) as e:
        _cli(data, "promote", "3")  # --reason is required
    assert e.value.code == 2
    capsys.readouterr()

    # an empty data dir: the store is named, and not created by asking
    empty = tmp_path / "empty"
    assert _cli(empty, "list") == 1
    empty_uri = _settings(empty).mlflow_tracking_uri
    assert capsys.readouterr().err.strip() == f"aiobs model: registered model 'aiobs-ranker' not found in {empty_uri}"
    assert not Path(empty_uri[len("sqlite:///"):]).exists()


def test_a_registered_ranker_is_labelled_with_its_registry_version(store, tmp_path):
    _, uri, _ = store
    champion = XGBoostRanker.load(f"models:/{MODEL_NAME}@{CHAMPION}", tracking_uri=uri)
    assert champion.version == "aiobs-ranker/2" and champion.trained_as == "xgb-tiny-2"
    three = XGBoostRanker.load(f"models:/{MODEL_NAME}/3", tracking_uri=uri)
    assert three.version == "aiobs-ranker/3" and three.trained_as == "xgb-tiny-3"
    assert XGBoostRanker.load(f"models:/{MODEL_NAME}/3", version="mine", tracking_uri=uri).version == "mine"
    x = np.zeros((5, len(RANKER_FEATURES)), np.float32)
    np.testing.assert_allclose(three.score(x), XGBoostRanker(_booster("xgb-tiny-3", 3)).score(x), rtol=1e-6)

    for ref, what in [(f"{MODEL_NAME}@gold", f"alias 'gold' of registered model '{MODEL_NAME}'"),
                      (f"{MODEL_NAME}/9", f"version 9 of registered model '{MODEL_NAME}'"),
                      ("nope@champion", "registered model 'nope'")]:
        with pytest.raises(RankerError) as e:
            XGBoostRanker.load(f"models:/{ref}", tracking_uri=uri)
        assert str(e.value) == f"cannot load XGBoost model models:/{ref}: {what} not found in {uri}"
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    with pytest.raises(RankerError, match=f"registered model 'aiobs-ranker' not found in {missing}"):
        XGBoostRanker.load(f"models:/{MODEL_NAME}@{CHAMPION}", tracking_uri=missing)
    assert not (tmp_path / "none").exists()
