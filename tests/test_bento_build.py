"""`bentoml build` of the director service: with nothing but the package registries (the project's own lock goes in
as is, nothing is resolved), into a throw-away BENTOML_HOME; the Bento carries what a GPU node needs to serve it:
the code (bento/, runtime/, ranker/, features/), the pinned requirements, the telemetry/offline environment and
every API. No docker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CODE = ["bento/service.py", "runtime/live.py", "runtime/settings.py", "runtime/model_manager.py", "runtime/metrics.py",
        "runtime/analysis/engine.py", "runtime/models.py", "ranker/core.py", "ranker/policy.py", "features/spool.py",
        "features/schema.py", "features/extract.py"]
ENVS = {"BENTOML_DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DAGSTER_DISABLE_TELEMETRY": "1",
        "ORT_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
APIS = {"tick", "models_in_use", "live_start", "live_stop", "live_status", "live_token", "live_override"}


def pins(text: str) -> set[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped)."""
    return {ln.split("#")[0].strip() for ln in text.splitlines() if ln.split("#")[0].strip()}


def test_bentoml_build_packs_what_the_gpu_node_needs(tmp_path):
    home = tmp_path / "bentoml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOBS_", "BENTOML_"))}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="true",
               UV_OFFLINE="1")  # the lock is used as is: a resolver run (which would need the index) is an error
    exe = Path(sys.executable).parent / "bentoml"
    p = subprocess.run([str(exe), "build", "-f", "bento/bentofile.yaml", ".", "-o", "tag"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
    tag = p.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    bento = home / "bentos" / name / version
    assert name == "aiobs-director" and bento.is_dir(), (tag, list(home.rglob("bento.yaml")))

    src = bento / "src"
    for f in CODE:
        assert (src / f).is_file(), f"{f} is not in the Bento"
    packed = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert not [f for f in packed if f.startswith(("tests/", ".venv/", ".data/", ".bin/", "notebooks/"))
                or "__pycache__" in f], sorted(packed)
    # the pinned requirements, exactly the project's lock (+ the bentoml that built it, pinned the same)
    reqs = pins((bento / "env" / "python" / "requirements.txt").read_text())
    lock = pins((ROOT / "requirements.lock").read_text())
    import bentoml

    assert reqs == lock | {f"bentoml=={bentoml.__version__}"}, sorted(reqs ^ lock)
    assert f"bentoml=={bentoml.__version__}" in lock

    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert info["service"] == "bento.service:Director" and info["image"]["python_version"] == "3.11"
    assert {e["name"]: e["value"] for e in info["envs"]} == ENVS
    assert {r["name"] for r in info["schema"]["routes"]} == APIS
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert all(f"ENV {k}=" in dockerfile for k in ENVS) and "libgl1" in dockerfile

    # the packed code imports from the Bento alone (not from this checkout)
    probe = ("import json, bento.service, runtime.live, runtime.analysis.engine, ranker.core, features.spool as m;"
             "print(json.dumps([x.__file__ for x in (bento.service, runtime.live, runtime.analysis.engine, "
             "ranker.core, m)]))")
    p = subprocess.run([sys.executable, "-c", probe], cwd=src, env={**env, "PYTHONPATH": ""}, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    files = json.loads(p.stdout.strip().splitlines()[-1])
    assert all(Path(f).resolve().is_relative_to(src.resolve()) for f in files), files
