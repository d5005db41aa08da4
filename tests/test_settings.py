from __future__ import annotations

import pytest

from runtime.settings import SettingsError, load_settings


def test_defaults_need_no_external_server(tmp_path):
    s = load_settings(env={}, data_dir=tmp_path)
    assert s.clickhouse_dsn == f"chdb://{tmp_path}/clickhouse" and s.clickhouse_embedded
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert s.dagster_home == f"{tmp_path}/dagster" and not s.livekit_configured
    s.ensure_dirs()
    assert (tmp_path / "spool").is_dir() and (tmp_path / "mlflow").is_dir()


def test_yaml_then_environment_then_arguments(tmp_path):
    cfg = tmp_path / "aiobs.yaml"
    cfg.write_text("tick_hz: 10\nyolo_model: custom.pt\nkeywords: [goal]\n")
    env = {"AIOBS_TICK_HZ": "4", "AIOBS_KEYWORDS": "a, b", "AIOBS_CLICKHOUSE_DSN": "http://ch:8123"}
    s = load_settings(cfg, env=env)
    assert s.tick_hz == 4 and s.yolo_model == "custom.pt" and s.keywords == ["a", "b"]
    assert s.clickhouse_dsn == "http://ch:8123" and not s.clickhouse_embedded
    assert load_settings(cfg, env=env, tick_hz=2).tick_hz == 2


def test_bad_settings_are_clear(tmp_path):
    with pytest.raises(SettingsError, match="AIOBS_TICKRATE"):
        load_settings(env={"AIOBS_TICKRATE": "5"})
    with pytest.raises(SettingsError, match="tick_hz"):
        load_settings(env={"AIOBS_TICK_HZ": "fast"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad.write_text("device: tpu\n")
    with pytest.raises(SettingsError, match="device"):
        load_settings(bad, env={})
