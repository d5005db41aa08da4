"""Test-wide set-up: no telemetry, no model hubs, loopback only; shared fixtures (data dirs, a real livekit-server)."""

from __future__ import annotations

import os

# Before any library import: every library's phone-home switch off.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for k, v in {
    "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": os.path.join(_ROOT, ".cache", "ultralytics"),
    "MLFLOW_DISABLE_TELEMETRY": "true", "DAGSTER_DISABLE_TELEMETRY": "1", "BENTOML_DO_NOT_TRACK": "true",
    "ORT_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ[k] = v
for k in [k for k in os.environ if k.startswith("AIOBS_")]:  # a developer's own settings must not leak into tests
    del os.environ[k]

from pathlib import Path

import pytest

from runtime.rig import free_port  # noqa: F401,E402 - tests import it from here

ROOT = Path(_ROOT)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory):
    """A real livekit-server (built by ./dev.sh from the Go module proxy) on 127.0.0.1 with dev keys."""
    from runtime.rig import livekit_server as start

    try:
        server = start(ROOT / ".bin" / "livekit-server", tmp_path_factory.mktemp("livekit"))
        info = server.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield info
    server.__exit__(None, None, None)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session):
    yield
    session.config.stash[_EXIT_STATUS] = int(session.exitstatus)  # as every plugin left it


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The run's exit, without the interpreter's own shutdown, once livekit's native runtime was loaded: its atexit
    dispose stops a tokio runtime whose workers may still call back into a finalising interpreter, which aborts the
    process ("panic in a function that cannot unwind", rc 134) after every test passed (seen once, running
    test_control_page.py alone). Everything pytest reports is written by now; the exit status is pytest's own."""
    import sys

    if "livekit.rtc" not in sys.modules or _EXIT_STATUS not in config.stash:
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(config.stash[_EXIT_STATUS])
