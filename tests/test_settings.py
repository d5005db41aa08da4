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
    with pytest.raises(SettingsError, match="AIOBS_TICK_HZ='fast'"):  # the variable the user set, not the field
        load_settings(env={"AIOBS_TICK_HZ": "fast"})
    with pytest.raises(SettingsError, match="AIOBS_LIVE_ANALYSIS_LAYER='huge': Input should be 'auto'"):
        load_settings(env={"AIOBS_LIVE_ANALYSIS_LAYER": "huge"})
    assert load_settings(env={"AIOBS_LIVE_ANALYSIS_LAYER": "Medium"}).live_analysis_layer == "medium"  # any case
    with pytest.raises(SettingsError, match="AIOBS_PROGRAM_BITRATE_KBPS='50'.*too low"):
        load_settings(env={"AIOBS_PROGRAM_BITRATE_KBPS": "50"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(SettingsError, match="mapping"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", env={})
    bad.write_text("device: tpu\n")
    with pytest.raises(SettingsError, match=r"device \(in .*bad.yaml\)='tpu'"):
        load_settings(bad, env={})


def test_policy_and_ab_share_are_settings_every_front_door_reads(tmp_path):
    from ranker.policy import PolicyConfig
    from runtime.cli import _settings, build_parser

    cfg = tmp_path / "aiobs.yaml"
    cfg.write_text("policy:\n  min_hold_s: 3\n  wide_camera: cam1\nchallenger_share: 0.2\n")
    env = {"AIOBS_POLICY_DELTA": "0.3", "AIOBS_CHALLENGER_SHARE": "0.1"}
    s = load_settings(cfg, env=env)
    assert s.policy == PolicyConfig(min_hold_s=3.0, wide_camera="cam1", delta=0.3) and s.challenger_share == 0.1
    with pytest.raises(SettingsError, match="AIOBS_POLICY_MINHOLD"):
        load_settings(env={"AIOBS_POLICY_MINHOLD": "3"})
    with pytest.raises(SettingsError, match="min_hold_s|MIN_HOLD_S"):
        load_settings(env={"AIOBS_POLICY_MIN_HOLD_S": "-2"})
    with pytest.raises(SettingsError, match="AIOBS_CHALLENGER_SHARE"):
        load_settings(env={"AIOBS_CHALLENGER_SHARE": "1.5"})
    # command-line flags are the last word, merged field by field with YAML and environment
    import os

    args = build_parser().parse_args(["--config", str(cfg), "--data-dir", str(tmp_path / "d"), "direct", "x.mp4",
                                      "--out", "o", "--min-hold", "5"])
    old = dict(os.environ)
    os.environ.update(env)
    try:
        s = _settings(args)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert s.policy == PolicyConfig(min_hold_s=5.0, wide_camera="cam1", delta=0.3)
