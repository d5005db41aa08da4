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


_SESSION = pytest.StashKey[pytest.Session]()


def pytest_sessionstart(session):
    session.config.stash[_SESSION] = session


def _pytest_is_the_program() -> bool:
    """Run as `pytest` or `python -m pytest`, not by pytest.main() inside another program (an IDE, a notebook)."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return (spec is not None and spec.name in ("pytest", "pytest.__main__")) \
        or os.path.basename(sys.argv[0] or "") in ("pytest", "py.test")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The run's exit, without the interpreter's own shutdown, once livekit's native runtime was loaded: its atexit
    dispose stops a tokio runtime whose workers may still call back into a finalising interpreter, which aborts the
    process ("panic in a function that cannot unwind", rc 134) after every test passed (seen once, running
    test_control_page.py alone). Everything pytest reports is written by now; the exit status is pytest's own
    (`session.exitstatus`, as pytest returns it). Not when pytest.main() runs inside another program, nor with
    --debug (its file is closed after this hook)."""
    import sys

    session = config.stash.get(_SESSION, None)
    if ("livekit.rtc" not in sys.modules or session is None or config.getoption("debug", None)
            or not _pytest_is_the_program()):
        return
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(int(session.exitstatus))
