"""The data scientist's day as the README gives it, with a data dir that is not the default (`AIOBS_DATA_DIR`):
`aiobs simulate`, `./dev.sh retrain`, `aiobs model list|promote`, `./dev.sh dagster` and `./dev.sh mlflow`. Everything
lands in that dir (feature log, Dagster's run history, the MLflow store and artifacts, the Optuna study) and nothing in
the checkout's `.data/` or an `mlruns/`; the retrain ends on a summary line; the Dagster asset page and the MLflow model
page, opened in headless Chromium, show the run's outcome (screenshots kept under the test's tmp dir, or under
`TEST_SCREENSHOTS_DIR` when set). And `./dev.sh dagster` stops promptly on TERM or INT, also when it was started as a
background job (which ignores SIGINT, and `dagster dev` copies SIGINT's handler onto SIGTERM)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from runtime.rig import free_port
from tests.test_control_page import CHROMIUM, CHROMIUM_ARGS
from tests.test_pipelines import REALSET

ROOT = Path(__file__).resolve().parent.parent
AIOBS = ROOT / ".venv" / "bin" / "aiobs"


def _env(data_dir: Path, **extra) -> dict:
    # the real-media set of the gate is a cache shared with the other tests (built once, ~100 s); everything else
    # comes from the data dir (conftest has removed the developer's own AIOBS_* settings)
    return {**os.environ, "AIOBS_DATA_DIR": str(data_dir), "AIOBS_REALSET_DIR": str(REALSET), **extra}


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()} if d.is_dir() else {}


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}")


def _start(cmd: list[str], env: dict, log: Path, ignore_sigint: bool = False) -> subprocess.Popen:
    def background_job():  # what `./dev.sh dagster &` in a script gets: SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=background_job if ignore_sigint else None)


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM, grace: float = 30.0) -> float:
    """Signal the process (dev.sh exec's into the server, so this is the server itself); seconds until it and its
    whole process group are gone (everything left is killed after `grace`)."""
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    took = time.monotonic() - start
    while time.monotonic() - start < grace:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    took = max(took, time.monotonic() - start)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return took


def _screenshot(page, url: str, wait_for: list[str], out: Path, dismiss: list[str]) -> str:
    page.goto(url)
    for text in wait_for:
        page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for name in dismiss:  # first-visit popups that would cover the page (they open a moment after the page)
        try:
            page.get_by_role("button", name=name, exact=True).first.click(timeout=5_000)
        except PlaywrightTimeout:
            pass
    page.wait_for_timeout(500)
    page.screenshot(path=str(out), full_page=True)
    return page.inner_text("body")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """`aiobs simulate` then `./dev.sh retrain` into a fresh, non-default data dir."""
    data = tmp_path_factory.mktemp("scientist") / "my-data"
    before = {"data": _snapshot(ROOT / ".data"), "mlruns": (ROOT / "mlruns").exists()}
    env = _env(data)
    sim = subprocess.run([str(AIOBS), "simulate", "--sessions", "8", "--duration", "120", "--seed", "3"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr[-3000:]
    assert str(data) in sim.stdout + sim.stderr  # says where it wrote
    run_yaml = data.parent / "run.yaml"
    run_yaml.write_text("ops:\n  ranker_study:\n    config:\n      n_trials: 2\n      folds: 2\n")
    p = subprocess.run([str(ROOT / "dev.sh"), "retrain", "-c", str(run_yaml)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return data, env, out, before


def test_the_readme_commands_keep_everything_in_the_data_dir(retrained):
    data, env, out, before = retrained
    assert f"data dir {data}" in out  # dev.sh says where
    summary = re.search(r"retrain: aiobs-ranker version (\d+) (PROMOTED|not promoted) \(aliases now ([^)]*)\)", out)
    assert summary, out[-4000:]
    assert "trial 2/2" in out  # progress per trial in the terminal
    # the feature log, Dagster's run history, the MLflow store and its artifacts, the Optuna study: all in the data dir
    assert (data / "clickhouse").is_dir()
    assert any((data / "dagster" / "history").rglob("*.db")), "Dagster's runs are in the data dir"
    assert (data / "mlflow" / "mlflow.db").is_file()
    assert any(p.name == "MLmodel" for p in (data / "mlflow" / "artifacts").rglob("*"))
    assert (data / "training" / "optuna.db").is_file()
    # and nothing in the checkout's default store
    assert _snapshot(ROOT / ".data") == before["data"], "the checkout's .data/ was touched"
    assert (ROOT / "mlruns").exists() == before["mlruns"], "an mlruns/ appeared in the checkout"
    # the registry commands read the same store
    ls = subprocess.run([str(AIOBS), "model", "list"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ls.returncode == 0, ls.stderr[-2000:]
    assert str(data / "mlflow" / "mlflow.db") in ls.stdout + ls.stderr
    assert re.search(rf"\bv?{summary.group(1)}\b", ls.stdout)


def test_dagster_and_mlflow_pages_show_the_retrain(retrained, tmp_path):
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run ./dev.sh setup (apt-get install chromium)")
    data, env, out, _ = retrained
    shots = Path(os.environ.get("TEST_SCREENSHOTS_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    why = "\"action\": \"gate\""  # promoted by the gate: its audit entry
    if "version 1 not promoted" in out:  # the usual outcome of 2 trials: a data scientist's audited promotion
        why = "reviewed the evaluation"
        pr = subprocess.run([str(AIOBS), "model", "promote", "1", "--reason", why, "--who", "ds"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
        assert pr.returncode == 0, pr.stdout[-2000:] + pr.stderr[-2000:]
    dag_port, ml_port = free_port(), free_port()
    dag_log, ml_log = tmp_path / "dagster.log", tmp_path / "mlflow.log"
    dagster = _start([str(ROOT / "dev.sh"), "dagster"], {**env, "PORT": str(dag_port)}, dag_log)
    mlflow = _start([str(ROOT / "dev.sh"), "mlflow"], {**env, "PORT": str(ml_port)}, ml_log)
    try:
        _wait_http(f"http://127.0.0.1:{dag_port}/server_info", dagster, dag_log)
        _wait_http(f"http://127.0.0.1:{ml_port}/health", mlflow, ml_log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            dag_text = _screenshot(page, f"http://127.0.0.1:{dag_port}/assets/ranker_registration",
                                   ["Latest materialization", "model_uri"], shots / "dagster_ranker_registration.png",
                                   dismiss=["Skip"])
            ml_text = _screenshot(page, f"http://127.0.0.1:{ml_port}/#/models/aiobs-ranker/versions/1",
                                  ["Version 1", "champion"], shots / "mlflow_model_version.png", dismiss=["Close"])
            browser.close()
    finally:
        took = {"dagster": _stop(dagster), "mlflow": _stop(mlflow)}
    # the asset page: the materialization of this run, the gate's verdict and where it stored it (the data dir)
    assert "models:/aiobs-ranker/1" in dag_text and "gate" in dag_text
    assert str(data / "dagster") in dag_text
    # the model page: the alias, the gate's reason and the audit trail of the manual promotion
    assert "champion" in ml_text and "audit" in ml_text and why in ml_text
    assert (shots / "dagster_ranker_registration.png").stat().st_size > 20_000
    assert (shots / "mlflow_model_version.png").stat().st_size > 20_000
    assert took["dagster"] < 20 and took["mlflow"] < 20, took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_dagster_dev_stops_promptly_when_started_in_the_background(sig, tmp_path):
    port = free_port()
    log = tmp_path / "dagster.log"
    proc = _start([str(ROOT / "dev.sh"), "dagster"], _env(tmp_path / "data", PORT=str(port)), log,
                  ignore_sigint=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, log)
    except BaseException:
        _stop(proc, signal.SIGKILL)
        raise
    took = _stop(proc, sig)
    assert took < 20, f"{sig.name}: still running after {took:.0f} s\n{log.read_text()[-2000:]}"
    assert "Dagster services shut down" in log.read_text()
