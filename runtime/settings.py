"""One settings object for AI-OBS.

Sources, later wins: built-in defaults -> a YAML file (``--config``, or ``$AIOBS_CONFIG``, or ``./aiobs.yaml`` when
present) -> environment variables ``AIOBS_<FIELD>`` (upper-case field name, e.g. ``AIOBS_CLICKHOUSE_DSN``).

Every default works with no external server: ClickHouse is chDB under the data dir, MLflow is a sqlite store under
the data dir, Dagster home is under the data dir. LiveKit settings are needed only for live mode.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ranker.policy import PolicyConfig

ENV_PREFIX = "AIOBS_"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """The configuration is invalid; the message names the source and the field."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # where things live
    data_dir: Path = Field(PROJECT_ROOT / ".data", description="root for every local store below")
    clickhouse_dsn: str = Field("", description="chdb:///path (embedded) or http(s)://user:pass@host:8123; "
                                                "default chdb://<data_dir>/clickhouse")
    mlflow_tracking_uri: str = Field("", description="default sqlite:///<data_dir>/mlflow/mlflow.db")
    mlflow_artifacts_dir: str = Field("", description="default <data_dir>/mlflow/artifacts")
    dagster_home: str = Field("", description="default <data_dir>/dagster")
    spool_dir: str = Field("", description="feature-log spool; default <data_dir>/spool")
    realset_dir: str = Field("", description="the real-media evaluation sessions of the promotion gate (analysed "
                             "once, cached); default <data_dir>/realset")

    # live mode (LiveKit); empty url = not configured
    livekit_url: str = Field("", description="ws://host:7880 of the LiveKit server (live mode only)")
    livekit_api_key: str = ""
    livekit_api_secret: str = ""
    livekit_room: str = "aiobs"
    program_delay_s: float = Field(0.0, ge=0, le=10, description="live broadcast delay: the program (picture and "
                                   "sound) airs this long after the cameras, so every cut is placed at the best "
                                   "word boundary inside the delay, as `aiobs direct` does on files; 0 = no delay")
    program_av_sync_ms: int = Field(0, ge=-500, le=1000, description="live lip sync: the program picture is held back "
                                    "this long behind its sound (negative: the sound behind the picture), as OBS's "
                                    "sync offset. WebRTC's audio path (Opus packets, the jitter buffer) brings a "
                                    "camera's sound later than its picture, at every hop: bench/live.py measures "
                                    "the offset of the sources and of the program; 0 = the least latency")
    live_analysis_layer: Literal["auto", "low", "medium", "high"] = Field(
        "auto", description="live: the simulcast layer subscribed for cameras that are neither on air nor next in line "
                            "(only analysed, at 640x360): auto = medium (640x360 of a 1280x720 camera) for cameras "
                            "that publish 720p or more, their best layer otherwise. The camera on air and the "
                            "best-scored other one always get the best layer; cameras without simulcast send one")
    program_bitrate_kbps: int = Field(0, ge=0, le=50_000, description="live: the program picture's bitrate in kbit/s; "
                                      "0 = from its size and rate (about 1600 for 720p at 25 fps); else at least "
                                      "100 (less shows no picture worth the name)")
    live_asr: bool = Field(False, description="live mode runs Whisper on every mic (keywords, word times); off by "
                                              "default: on a CPU it cannot keep up with 5 mics beside the 5 Hz tick")
    program_audio: Literal["follow", "mix", "off"] = Field("follow", description="live program sound: the program "
                                                                                 "camera's mic (follow), every mic "
                                                                                 "mixed (mix), or none (off)")

    # models: a hub id / file name for users with internet, with packaged offline fallbacks (runtime/models.py)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    yolo_model: str = Field("yolo11n.pt", description="ultralytics weights, a local path, or a .yaml")
    detect_imgsz: int = Field(0, ge=0, description="YOLO input size; 0 = auto (640 on CUDA, 320 on CPU)")
    detect_backend: Literal["auto", "predict", "direct"] = Field(
        "auto", description="people detection: ultralytics predict, or direct (letterbox on the device, fp16, CUDA "
                            "graphs, one NMS per batch); auto = direct on CUDA, predict on a CPU")
    detect_batching: Literal["auto", "on", "off"] = Field(
        "auto", description="one detector per process shared by every room's engine, one batch per deadline; auto = on "
                            "with CUDA")
    detect_batch_wait_ms: float = Field(4.0, ge=0, le=100, description="how long the shared detector waits for "
                                                                       "other rooms' frames before it runs a batch")
    face_backend: str = Field("haar", description="haar (offline default), none, or a YOLO face/pose model path")
    whisper_model: str = Field("base", description="faster-whisper size/id or a local CTranslate2 dir")
    vlm_model: str = Field("", description="transformers image-text model id or dir; empty = no VLM")
    vlm_precision: Literal["auto", "bf16", "nf4", "float32"] = Field(
        "auto", description="VLM weights: auto = bf16 on a GPU with the memory for it, nf4 (bitsandbytes 4-bit) on one "
                            "without, float32 on a CPU")
    vlm_static_cache: Literal["auto", "on", "off"] = Field(
        "auto", description="static KV cache (compiled decode) for the batched VLM reads; auto = on with CUDA")
    vlm_max_new_tokens: int = Field(64, ge=8, le=512, description="tokens a VLM read may generate (short JSON)")
    tts_backend: Literal["piper", "elevenlabs", "none"] = Field("piper", description="narration voice: piper "
                                                                "(packaged, offline), elevenlabs (with Piper as its "
                                                                "fallback), or none")
    offline: bool = Field(True, description="never reach a model hub; use packaged models only")

    # narration (runtime/narration/): what is said, when, and by which voice
    elevenlabs_api_key: SecretStr = SecretStr("")
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model_id: str = "eleven_flash_v2_5"
    elevenlabs_base_url: str = Field("", pattern=r"^(https?://[^\s]+)?$", description="empty = ElevenLabs' own API")
    elevenlabs_timeout_s: float = Field(4.0, gt=0, le=60, description="a stream silent this long fails the line")
    tts_failures_to_open: int = Field(3, ge=1, le=100, description="failures in a row that mark a TTS provider "
                                                                    "unavailable (its breaker opens)")
    tts_probe_interval_s: float = Field(30.0, gt=0, description="how often an unavailable provider is tried again")
    narration_interval_s: float = Field(15.0, ge=1, description="at most one narration line per this many seconds")
    narration_max_age_s: float = Field(8.0, gt=0, description="a line not aired this long after its event is "
                                                              "dropped (stale)")
    narration_margin_s: float = Field(0.2, ge=0, le=2, description="silence kept around a line")
    narration_min_pause_s: float = Field(0.5, ge=0, le=5, description="live without a delay: the pause a line "
                                                                      "waits for before it starts")
    narration_duck_db: float = Field(-14.0, ge=-60, le=0, description="program sound under narration")
    narration_in_program: bool = Field(True, description="live: mix narration into the program sound (it always "
                                                         "has its own `narration` track)")
    narration_allow_names: list[str] = Field(default_factory=list, description="names narration may say (the "
                                             "cameras' names always may)")
    narration_banned_words: list[str] = Field(default_factory=list)
    narration_banned_action: Literal["remove", "refuse"] = "remove"
    narration_templates: dict[str, list[str]] = Field(default_factory=dict, description="event type (cut, turn, "
                                                      "scene, keyword, operator) -> line templates, replacing the "
                                                      "built-in ones (YAML, or JSON in the environment)")
    narration_writer: str = Field("", pattern=r"^([\w.]+:\w+)?$", description="module:function that writes a "
                                  "line from an event (an LLM writer); empty = templates only")

    # director
    tick_hz: float = Field(5.0, gt=0, le=60)
    vision_hz: float = Field(0.0, ge=0, description="people/face analysis rate per camera; 0 = auto: every tick "
                                                    "on a GPU; on a CPU at most 1 Hz per camera and 3 frames/s "
                                                    "across all cameras (direct and live alike)")
    keywords: list[str] = Field(default_factory=lambda: ["goal", "applause", "breaking", "welcome", "question"])
    policy: PolicyConfig = Field(default_factory=PolicyConfig,
                                 description="the switching policy (ranker/policy.py PolicyConfig); YAML `policy:` "
                                             "mapping or AIOBS_POLICY_<FIELD>, e.g. AIOBS_POLICY_MIN_HOLD_S=3")
    challenger_share: float = Field(0.0, ge=0, le=1, description="share of traffic (0..1; 0.1 = 10 %) the "
                                                                 "registry's challenger directs (A/B); the rest get "
                                                                 "the champion")
    ab_unit: Literal["session", "block"] = Field("session", description="A/B assignment unit: `session` (sticky "
                                                 "per session/room, for fleets) or `block` (alternating time blocks "
                                                 "within a session, for one room)")
    ab_block_s: float = Field(300.0, ge=10, description="length of an A/B time block (ab_unit=block)")
    ab_shadow: bool = Field(False, description="the arm not acting scores every tick too; its would-be decisions "
                                               "are logged (shadow_decisions), never acted on")

    # the HTTP service (bento/service.py): who may direct, and how much one client may ask of it
    service_token: SecretStr = Field(SecretStr(""), description="bearer token every mutating service API (/tick) "
                                                                "requires (Authorization: Bearer <token>); empty = "
                                                                "the service refuses to start unless "
                                                                "service_allow_anonymous")
    service_allow_anonymous: bool = Field(False, description="let `bentoml serve` start without service_token, "
                                                             "every caller may direct (a trusted loopback dev box "
                                                             "only)")
    service_max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="largest request body the "
                                                                                 "service reads (413 above)")
    service_session_idle_s: float = Field(600.0, gt=0, description="a session with no tick for this long is "
                                                                   "forgotten (its next tick starts it afresh)")
    service_max_sessions: int = Field(256, ge=1, le=100_000, description="live sessions kept at most; a new "
                                                                         "session beyond this evicts the one idle "
                                                                         "longest")
    service_max_rooms: int = Field(4, ge=1, le=64, description="LiveKit rooms the service directs at once "
                                                               "(live_start); a failed room counts until live_stop "
                                                               "clears it")
    service_livekit_browser_url: str = Field("", pattern=r"^(wss?://[^\s]+)?$",
                                             description="the LiveKit URL the control page's browser joins (ws:// "
                                                         "or wss://, as browsers reach the server); empty = "
                                                         "livekit_url")

    @field_validator("program_bitrate_kbps")
    @classmethod
    def _check_bitrate(cls, v: int) -> int:
        if 0 < v < 100:
            raise ValueError(f"{v} kbit/s is too low: 0 (from the program's size) or at least 100")
        return v

    @model_validator(mode="after")
    def _check_narration(self) -> "Settings":
        from runtime.narration.writer import check_templates

        check_templates(self.narration_templates)  # a typo in a template would never speak: refuse it now
        return self

    @model_validator(mode="after")
    def _fill_paths(self) -> "Settings":
        d = Path(self.data_dir).expanduser()
        object.__setattr__(self, "data_dir", d)
        if not self.clickhouse_dsn:
            object.__setattr__(self, "clickhouse_dsn", f"chdb://{(d / 'clickhouse').as_posix()}")
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{(d / 'mlflow' / 'mlflow.db').as_posix()}")
        if not self.mlflow_artifacts_dir:
            object.__setattr__(self, "mlflow_artifacts_dir", (d / "mlflow" / "artifacts").as_posix())
        if not self.dagster_home:
            object.__setattr__(self, "dagster_home", (d / "dagster").as_posix())
        if not self.spool_dir:
            object.__setattr__(self, "spool_dir", (d / "spool").as_posix())
        if not self.realset_dir:
            object.__setattr__(self, "realset_dir", (d / "realset").as_posix())
        return self

    @property
    def clickhouse_embedded(self) -> bool:
        return self.clickhouse_dsn.startswith("chdb:")

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def ensure_dirs(self) -> None:
        for p in (self.data_dir, Path(self.spool_dir), Path(self.dagster_home), Path(self.mlflow_artifacts_dir),
                  self.models_dir):
            p.mkdir(parents=True, exist_ok=True)
        if self.mlflow_tracking_uri.startswith("sqlite:///"):
            Path(self.mlflow_tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


POLICY_PREFIX = "policy_"


def _env_values(env: dict[str, str]) -> dict[str, Any]:
    fields = Settings.model_fields
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name.startswith(POLICY_PREFIX):  # AIOBS_POLICY_MIN_HOLD_S -> policy.min_hold_s
            sub = name[len(POLICY_PREFIX):]
            if sub not in PolicyConfig.__dataclass_fields__:
                raise SettingsError(f"unknown setting {key} (policy settings: " + ", ".join(
                    ENV_PREFIX + POLICY_PREFIX.upper() + f.upper() for f in PolicyConfig.__dataclass_fields__) + ")")
            out.setdefault("policy", {})[sub] = None if raw == "" and sub == "wide_camera" else raw
            continue
        if name not in fields:
            raise SettingsError(f"unknown setting {key} (known: {', '.join(ENV_PREFIX + f.upper() for f in fields)})")
        if name in ("keywords", "narration_allow_names", "narration_banned_words"):
            out[name] = [k.strip() for k in raw.split(",") if k.strip()]
        elif name == "narration_templates":
            try:
                out[name] = json.loads(raw)
            except ValueError as e:
                raise SettingsError(f"{key} must be JSON (event type -> list of templates): {e}") from None
        elif get_origin(fields[name].annotation) is Literal:  # a choice: AIOBS_PROGRAM_AUDIO=Mix is mix
            out[name] = raw.strip().lower()
        else:
            out[name] = raw
    return out


def _where(loc: tuple, env_values: dict, path) -> str:
    """Where a setting that failed validation was set, as its user wrote it: the environment variable
    (AIOBS_PROGRAM_AUDIO, AIOBS_POLICY_MIN_HOLD_S), else the field in the config file, else the field."""
    name = ".".join(map(str, loc))
    if loc and loc[0] == "policy" and len(loc) > 1 and loc[1] in (env_values.get("policy") or {}):
        return ENV_PREFIX + POLICY_PREFIX.upper() + str(loc[1]).upper()
    if loc and loc[0] in env_values and loc[0] != "policy":
        return ENV_PREFIX + str(loc[0]).upper()
    return f"{name} (in {path})" if path and loc else name or "settings"


def load_settings(config: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                  **overrides: Any) -> Settings:
    """Build the settings from YAML + environment + explicit overrides. Raises SettingsError with the reason."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    path = config or env.get(ENV_PREFIX + "CONFIG")
    if path is None and Path("aiobs.yaml").is_file():
        path = "aiobs.yaml"
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SettingsError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise SettingsError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"config file {path} must hold a mapping of setting: value")
        values.update(loaded)
    env_values = _env_values(env)
    for source in (env_values, {k: v for k, v in overrides.items() if v is not None}):
        if isinstance(source.get("policy"), dict):  # policy fields merge: YAML min_hold_s + env delta both apply
            base = values.get("policy") or {}
            if isinstance(base, PolicyConfig):
                base = asdict(base)
            if not isinstance(base, dict):
                raise SettingsError("`policy` must be a mapping of policy settings")
            source = {**source, "policy": {**base, **source["policy"]}}
        values.update(source)
    try:
        return Settings(**values)
    except ValidationError as e:
        problems = "; ".join(f"{_where(tuple(err['loc']), env_values, path)}"
                             + (f"={err['input']!r}" if isinstance(err.get("input"), (str, int, float)) else "")
                             + f": {err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise SettingsError(f"invalid settings: {problems}") from None
