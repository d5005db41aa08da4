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

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(_ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def livekit_server(tmp_path_factory):
    """A real livekit-server (built by ./dev.sh from the Go module proxy) on 127.0.0.1 with dev keys."""
    exe = ROOT / ".bin" / "livekit-server"
    if not exe.is_file():
        pytest.fail("livekit-server is not installed in .bin/: run ./dev.sh setup")
    port, tcp, udp = free_port(), free_port(), free_port()
    cfg = tmp_path_factory.mktemp("livekit") / "livekit.yaml"
    cfg.write_text(
        f"port: {port}\nbind_addresses: [127.0.0.1]\n"
        f"rtc:\n  tcp_port: {tcp}\n  udp_port: {udp}\n  use_external_ip: false\n  node_ip: 127.0.0.1\n"
        f"keys:\n  devkey: secretsecretsecretsecretsecretsecret\n"
        f"logging:\n  level: warn\n"
    )
    proc = subprocess.Popen([str(exe), "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
            proc.kill()
            pytest.fail(f"livekit-server did not start: {out[-2000:]}")
        time.sleep(0.2)
    yield {"url": f"ws://127.0.0.1:{port}", "api_key": "devkey", "api_secret": "secretsecretsecretsecretsecretsecret"}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
