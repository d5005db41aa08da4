"""The BentoML service: the director's ranking + decision core over HTTP (`bentoml serve bento.service:Director`).

A live runtime (or any other front end) posts one tick of scene features per camera; the service scores them with
the ranker the model manager assigns to the session (champion, an A/B share for the challenger, or the rule
baseline), runs that session's switching policy, logs every row and decision to the feature-log spool, and answers
with the scores and the decision. Manual overrides ride along with a tick. Thin by design: the logic is in
features/, ranker/ and runtime/.

Only operators direct: every API that changes state (/tick; any API not in READ_ONLY_APIS) needs
`Authorization: Bearer <AIOBS_SERVICE_TOKEN>`, checked before the body is read; without a token the service refuses
to start unless AIOBS_SERVICE_ALLOW_ANONYMOUS=true. A request is checked whole (strict JSON types, finite numbers,
bounded sizes, ids without control characters, the feature contract, a session clock that never goes back) before
any session state moves, and every refusal has one body: {"error": "<one line>", "detail": [{"type", "loc", "msg"}]}.
A session idle for AIOBS_SERVICE_SESSION_IDLE_S is forgotten; at most AIOBS_SERVICE_MAX_SESSIONS are kept (the
least recently ticked goes first); every eviction is logged.

Live rooms: `live_start` makes the service direct a LiveKit room itself (runtime/live.py LiveDirector: the models load
and warm up in a thread, then the director runs on the service's event loop until `live_stop`), one director per
room, at most AIOBS_SERVICE_MAX_ROOMS. `live_status` shows a room's director (link, program, scores, cuts, health)
or, without a room, every room and why the service is not ready: /readyz fails while a room is starting, its LiveKit
link is down, or its director failed (a failed room stays, with its error, until live_stop clears it). Each room
writes its own feature-log spool, <spool_dir>/rooms/<room>-<hash> (a spool directory has one writer). Shutting the
service down stops every room. The director's Prometheus series (aiobs_director_*, aiobs_live_*,
aiobs_analysis_*) are on bentoml's /metrics.

The control page, GET /control/ (bento/control/), is the operator's view of a room: every camera's score and tally,
the decision and recent cuts (live_status, twice a second), the program picture and sound through the LiveKit JS
client (vendored by ./dev.sh setup), and take/lock/release per camera, sent as `aiobs.override` data packets by the
page's own participant, which joins with an operator token from `live_token`: overrides take the same authorised path
as any operator's. The page itself is public and holds no data; the operator pastes the service token into it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import json
import logging
import math
import os
import re
import threading
import time
import unicodedata
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import bentoml  # noqa: E402
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,  # noqa: E402
                      WithJsonSchema)
from starlette.responses import JSONResponse  # noqa: E402

from features.extract import SCENE_FEATURES  # noqa: E402
from features.schema import TABLES  # noqa: E402
from features.spool import FeatureLog  # noqa: E402
from ranker.core import CameraTick as CoreCameraTick  # noqa: E402
from ranker.core import DirectorCore  # noqa: E402
from ranker.policy import MAX_ID_LEN, MAX_LOCK_S, Override, PolicyConfig  # noqa: E402
from runtime.model_manager import ModelManager  # noqa: E402
from runtime.settings import Settings, load_settings  # noqa: E402

# under bentoml's logger: `bentoml serve` configures it (INFO, the server's handler) and keeps its children enabled
log = logging.getLogger("bentoml.aiobs")

MAX_CAMERAS = 64
MAX_OVERRIDES = 16
MAX_FEATURE_NAME_LEN = 64
MAX_T_S = 1e9  # the session clock, seconds (~31 years)
MAX_ERRORS = 20  # validation problems reported in one 400
MIN_TOKEN_LEN = 16
READ_ONLY_APIS = frozenset({"models_in_use"})  # every other API changes state and needs the bearer token
LIVE_STOP_WAIT_S = 20.0  # live_stop waits this long for a director to finish its report
LIVE_SHUTDOWN_WAIT_S = 15.0  # on service shutdown, every room gets this long to stop
OPERATOR_PREFIX = "operator:"  # live_token's participant identities: never a camera's or the director's
MAX_OPERATOR_ID_LEN = 64
OPERATOR_TOKEN_TTL_S = 900.0  # to join (and rejoin); LiveKit refreshes the token of a participant while connected


# -- the request contract ---------------------------------------------------------------------------------------------
def _printable(v: str) -> str:
    """No control characters (C0/C1, format characters such as bidi overrides and zero-width marks, line and
    paragraph separators): ids end up in logs, the feature log and operator UIs."""
    bad = next((ch for ch in v if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(bad):04X})")
    return v


Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN), AfterValidator(_printable)]
OptionalId = Annotated[str, StringConstraints(max_length=MAX_ID_LEN), AfterValidator(_printable)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FEATURE_NAME_LEN),
                        AfterValidator(_printable)]
Seconds = Annotated[float, Field(ge=0, le=MAX_T_S)]

# strict: a number is a JSON number (not "0.5", not true), a flag is a JSON boolean; no NaN/Infinity anywhere;
# unknown fields are refused (a misspelt "overides" must not be dropped silently)
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class CameraIn(BaseModel):
    model_config = _STRICT

    camera_id: Id
    features: dict[FeatureName, float | None] = Field(
        max_length=len(SCENE_FEATURES),
        description="scene features by contract name (features/extract.py SCENE_FEATURES); an unknown name is "
                    "refused; missing = the contract's default (NULL for the VLM features)")
    speaking: bool = False
    safe_cut_wait_s: float = Field(0.0, ge=0, le=60)
    quiet_at: Seconds | None = Field(None, description="session time inside a pause of this camera's audio during "
                                                       "the last tick, where a cut may be placed")
    stale: bool = False


class OverrideIn(BaseModel):
    model_config = _STRICT

    action: Literal["take", "lock", "release"]
    camera: OptionalId = ""
    timeout_s: float | None = Field(None, gt=0, le=MAX_LOCK_S)
    operator: OptionalId = ""


class TickIn(BaseModel):
    """POST /tick: one tick of every camera of a session. `t` is the session clock in seconds, never going back."""

    model_config = _STRICT

    session_id: Id
    t: Seconds
    cameras: list[CameraIn] = Field(min_length=1, max_length=MAX_CAMERAS)
    overrides: list[OverrideIn] = Field(default_factory=list, max_length=MAX_OVERRIDES)


# the API takes the body as it came (any JSON) and checks it itself: every refusal then has the one error shape, and
# a refused tick never reaches the session; the API docs still show the TickIn contract
def _inlined(schema: dict) -> dict:
    defs = schema.pop("$defs", {})

    def walk(v):
        if isinstance(v, dict):
            if "$ref" in v:
                return walk(defs[v["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(x) for k, x in v.items()}
        return [walk(x) for x in v] if isinstance(v, list) else v

    return walk(schema)


TickBody = Annotated[Any, WithJsonSchema(_inlined(TickIn.model_json_schema()))]


def _even(v: list[int]) -> list[int]:
    if any(x % 2 for x in v):
        raise ValueError("the program's width and height must be even (4:2:0 video)")
    return v


class LiveStartIn(BaseModel):
    """POST /live_start: direct a LiveKit room (the service's AIOBS_LIVEKIT_URL) until live_stop."""

    model_config = _STRICT

    room: Id
    policy: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], float | str | None] | None = Field(
        None, max_length=64, description="switching-policy fields over the service's policy (ranker/policy.py "
                                         "PolicyConfig), e.g. {\"min_hold_s\": 3}; an unknown field is refused")
    program_delay_s: float | None = Field(None, ge=0, le=10, description="broadcast delay; default the service's "
                                                                         "AIOBS_PROGRAM_DELAY_S")
    program_audio: Literal["follow", "mix", "off"] | None = None
    program_av_sync_ms: int | None = Field(None, ge=-500, le=1000, description="lip sync: the picture held back this "
                                           "long behind the sound; default the service's AIOBS_PROGRAM_AV_SYNC_MS")
    program_size: Annotated[list[Annotated[int, Field(ge=64, le=3840)]], AfterValidator(_even)] = Field(
        [1280, 720], min_length=2, max_length=2, description="[width, height] of the program picture (even numbers)")
    program_fps: int = Field(25, ge=1, le=60)
    narrate: bool = Field(False, description="narrate in the pauses with the service's voice (tts_backend): a "
                                             "`narration` track, and in the program sound")


class LiveRoomIn(BaseModel):
    """POST /live_stop, /live_status: one room (live_status without a room: every room and the readiness)."""

    model_config = _STRICT

    room: Id | None = None


class LiveTokenIn(BaseModel):
    """POST /live_token: a LiveKit token for an operator (the control page) in a room the service directs."""

    model_config = _STRICT

    room: Id
    identity: Annotated[str, StringConstraints(min_length=1, max_length=MAX_OPERATOR_ID_LEN),
                        AfterValidator(_printable)] = Field(
        "operator", description=f"who operates; the participant joins as \"{OPERATOR_PREFIX}<identity>\" (never a "
                                f"camera's or the director's identity, which LiveKit would disconnect)")


LiveStartBody = Annotated[Any, WithJsonSchema(_inlined(LiveStartIn.model_json_schema()))]
LiveRoomBody = Annotated[Any, WithJsonSchema(_inlined(LiveRoomIn.model_json_schema()))]
LiveTokenBody = Annotated[Any, WithJsonSchema(_inlined(LiveTokenIn.model_json_schema()))]


class LiveOverrideIn(OverrideIn):
    """POST /live_override: an operator's take/lock/release for a room the service directs (the control page)."""

    room: Id


LiveOverrideBody = Annotated[Any, WithJsonSchema(_inlined(LiveOverrideIn.model_json_schema()))]


# -- one error shape --------------------------------------------------------------------------------------------------
def error_body(error: str, detail: list[dict]) -> dict:
    """Every 4xx this service answers: {"error": one line, "detail": [{"type", "loc", "msg"}, ...]}. It is the
    shape bentoml itself gives a body it cannot parse as JSON (its pydantic handler, plus a "url" per item)."""
    return {"error": error, "detail": detail}


def error_response(status: int, error: str, detail: list[dict], headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(error, detail), status_code=status, headers=headers)


def _loc(loc) -> str:
    return ".".join(str(p) for p in loc) or "body"


class BadRequest(Exception):
    def __init__(self, detail: list[dict]):
        super().__init__(detail)
        self.detail = detail[:MAX_ERRORS]
        first = self.detail[0]
        more = len(detail) - 1
        self.error = f"{_loc(first['loc'])}: {first['msg']}" + (f" (and {more} more)" if more else "")

    @classmethod
    def one(cls, type_: str, loc: list, msg: str) -> "BadRequest":
        return cls([{"type": type_, "loc": list(loc), "msg": msg}])

    @classmethod
    def from_validation(cls, e: ValidationError) -> "BadRequest":
        return cls([{"type": d["type"], "loc": list(d["loc"]), "msg": d["msg"]}
                    for d in e.errors(include_url=False, include_context=False, include_input=False)])

    def response(self) -> JSONResponse:
        return error_response(400, self.error, self.detail)


def parse_tick(payload: Any) -> tuple[TickIn, list[CoreCameraTick], list[Override]]:
    """The request, fully checked (types, bounds, the feature contract) before any session state is touched."""
    if not isinstance(payload, dict):
        raise BadRequest.one("model_type", [], f"the body must be a JSON object, not {type(payload).__name__}")
    try:
        req = TickIn.model_validate(payload)
    except ValidationError as e:
        raise BadRequest.from_validation(e) from None
    ids = [c.camera_id for c in req.cameras]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise BadRequest.one("duplicate_camera", ["cameras"], f"duplicate camera ids in one tick: {dup}")
    inputs = []
    for i, c in enumerate(req.cameras):
        try:
            inputs.append(CoreCameraTick.from_features(c.camera_id, c.features, speaking=c.speaking,
                                                       safe_cut_wait_s=c.safe_cut_wait_s, quiet_at=c.quiet_at,
                                                       stale=c.stale))
        except ValueError as e:
            raise BadRequest.one("value_error", ["cameras", i], str(e)) from None
    ovs = []
    for i, o in enumerate(req.overrides):
        try:
            ovs.append(Override(o.action, o.camera, o.timeout_s, o.operator))
        except ValueError as e:
            raise BadRequest.one("value_error", ["overrides", i], str(e)) from None
    return req, inputs, ovs


def parse_body(model: type[BaseModel], payload: Any) -> BaseModel:
    if not isinstance(payload, dict):
        raise BadRequest.one("model_type", [], f"the body must be a JSON object, not {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        raise BadRequest.from_validation(e) from None


def live_policy(base: PolicyConfig, overrides: dict | None) -> PolicyConfig:
    """The service's policy with a room's overrides on top; every field checked (PolicyConfig.from_mapping)."""
    if not overrides:
        return base
    if "wide_camera" in overrides and not isinstance(overrides["wide_camera"], (str, type(None))):
        raise BadRequest.one("value_error", ["policy", "wide_camera"], "wide_camera is a camera id or null")
    try:
        return PolicyConfig.from_mapping({**asdict(base), **overrides})
    except (ValueError, TypeError) as e:
        raise BadRequest.one("value_error", ["policy"], str(e)) from None


# -- who may call, and how much -------------------------------------------------------------------------------------
def auth_problem(settings: Settings) -> str:
    """Why the service must not start with these settings ("" = it may)."""
    token = settings.service_token.get_secret_value()
    if not token:
        if settings.service_allow_anonymous:
            return ""
        return ("no service token: set AIOBS_SERVICE_TOKEN (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`) and send `Authorization: Bearer <token>` with every /tick; or "
                "set AIOBS_SERVICE_ALLOW_ANONYMOUS=true to let anyone who can reach the port direct")
    if len(token) < MIN_TOKEN_LEN or not token.isascii() or any(ch.isspace() or not ch.isprintable()
                                                                for ch in token):
        return f"AIOBS_SERVICE_TOKEN must be at least {MIN_TOKEN_LEN} printable ASCII characters without spaces"
    return ""


def _norm_path(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


class ServiceGuard:
    """ASGI middleware in front of every route: the bearer token on every API that changes state (before the body
    is read, so a refused request costs nothing and moves nothing), JSON only there, and a bound on every request
    body (Content-Length, or counted while it streams in). Answers in the one error shape."""

    def __init__(self, app, guarded: frozenset[str] | None = None, settings: Settings | None = None):
        self.app = app
        s = settings or load_settings()
        self.token = s.service_token.get_secret_value().encode()
        # open only when explicitly allowed; a misconfigured guard (no token, not allowed) refuses every call
        self.anonymous = not self.token and s.service_allow_anonymous
        self.max_body = s.service_max_body_bytes
        self.guarded = guarded if guarded is not None else frozenset(
            _norm_path(m.route) for name, m in Director.apis.items() if name not in READ_ONLY_APIS)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers", ()):
            if k in (b"authorization", b"content-length", b"content-type"):
                headers.setdefault(k, v)
        guarded = _norm_path(scope.get("path", "")) in self.guarded
        if guarded:
            if not self.anonymous and not self._authorized(headers.get(b"authorization", b"")):
                return await error_response(
                    401, "unauthorized: this API needs `Authorization: Bearer <service token>`",
                    [{"type": "unauthorized", "loc": ["header", "authorization"],
                      "msg": "missing or wrong bearer token"}],
                    headers={"WWW-Authenticate": 'Bearer realm="aiobs-director"'})(scope, receive, send)
            media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
            if media != b"application/json":
                return await error_response(
                    415, "unsupported media type: send application/json",
                    [{"type": "media_type", "loc": ["header", "content-type"],
                      "msg": f"{media.decode('latin-1')[:80]!r} is not application/json"}])(scope, receive, send)
        too_big = error_response(413, f"request body too large (at most {self.max_body} bytes)",
                                 [{"type": "too_large", "loc": ["body"],
                                   "msg": f"the body exceeds {self.max_body} bytes"}])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = -1
            if n > self.max_body:
                return await too_big(scope, receive, send)
        # count what actually arrives (chunked bodies, or a Content-Length that lies): buffer up to the limit
        body, more = [], True
        size = 0
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # disconnect
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await too_big(scope, receive, send)
            body.append(chunk)
            more = msg.get("more_body", False)
        data = b"".join(body)
        if guarded and data:  # bentoml answers a body that is not JSON with a 500 (json.loads in its root model)
            try:
                json.loads(data)
            except ValueError as e:
                return await error_response(400, f"the body is not JSON: {e}"[:200],
                                            [{"type": "json_invalid", "loc": ["body"],
                                              "msg": f"invalid JSON: {e}"[:200]}])(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as the app would

        return await self.app(scope, replay, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        if not self.token or scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(given.strip(), self.token)


# -- the control page -----------------------------------------------------------------------------------------------
CONTROL_DIR = Path(__file__).resolve().parent / "control"
LIVEKIT_CLIENT_JS = CONTROL_DIR / "vendor" / "livekit-client.umd.js"  # ./dev.sh setup fetches it (npm registry)
CONTROL_STATIC = {  # everything /control/static/ serves: a fixed list, never a path from the request
    "control.js": (CONTROL_DIR / "control.js", "text/javascript; charset=utf-8"),
    "control.css": (CONTROL_DIR / "control.css", "text/css; charset=utf-8"),
    "vendor/livekit-client.umd.js": (LIVEKIT_CLIENT_JS, "text/javascript; charset=utf-8"),
}
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                     "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin"}


def browser_livekit_url(settings: Settings) -> str:
    """The LiveKit URL a browser joins: service_livekit_browser_url, else the service's own livekit_url."""
    return settings.service_livekit_browser_url or settings.livekit_url


def control_csp(livekit_url: str) -> str:
    """The control page's Content-Security-Policy: its own scripts and styles only (no inline code, no eval), and
    connections to this service and to the LiveKit server (signalling over ws(s), its HTTP validation endpoint)."""
    connect = ["'self'"]
    m = re.match(r"^(wss?)://([^/\s]+)", livekit_url)
    if m:
        http = "https" if m.group(1) == "wss" else "http"
        connect += [f"{m.group(1)}://{m.group(2)}", f"{http}://{m.group(2)}"]
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"media-src 'self' blob: mediastream:; connect-src {' '.join(connect)}; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def control_app():
    """The operator's control page as an ASGI app, mounted at /control: GET /control/ (the page) and
    /control/static/<file> (its script and style, and the LiveKit JS client vendored by ./dev.sh setup). Public:
    the page holds no data; everything it fetches (live_status, live_token) needs the service's bearer token, which
    the operator pastes into the page (kept in the tab's sessionStorage, never in a URL)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    state: dict[str, Any] = {}

    def csp() -> str:
        if "csp" not in state:  # the service's own settings (the same environment), read once
            state["csp"] = control_csp(browser_livekit_url(load_settings()))
        return state["csp"]

    async def page(request):
        try:
            html = (CONTROL_DIR / "control.html").read_bytes()
        except OSError:
            return error_response(404, "the control page is not installed (bento/control/control.html)",
                                  [{"type": "not_found", "loc": ["path"], "msg": "control.html is missing"}])
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={**_SECURITY_HEADERS, "Cache-Control": "no-store", "Content-Security-Policy": csp()})

    async def static(request):
        name = request.path_params["name"]
        entry = CONTROL_STATIC.get(name)
        if entry is None:
            return error_response(404, f"no such file: /control/static/{name}"[:200],
                                  [{"type": "not_found", "loc": ["path"], "msg": "not a file of the control page"}])
        path, media = entry
        if not path.is_file():
            why = ("the LiveKit JS client is not installed: run ./dev.sh setup (it fetches livekit-client from the "
                   "npm registry into bento/control/vendor/)" if name.startswith("vendor/") else f"{name} is missing")
            log.warning("aiobs-director: control page: %s", why)
            return error_response(404, why, [{"type": "not_installed", "loc": ["path"], "msg": why}])
        return FileResponse(path, media_type=media, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    return Starlette(routes=[Route("/", page, methods=["GET", "HEAD"]),
                             Route("/static/{name:path}", static, methods=["GET", "HEAD"])])


# -- the service ----------------------------------------------------------------------------------------------------
@dataclass
class _Session:
    core: DirectorCore
    last_t: float
    seen: float  # time.monotonic() of the last tick


@dataclass
class _Room:
    """One room the service directs: its stop event and the background task that builds the director (models load
    and warm up in a thread) and runs it on the service's event loop until stopped."""

    name: str
    session_id: str
    stop: asyncio.Event
    started_at: float  # time.time()
    state: str = "starting"  # starting | running | stopping | stopped | failed
    director: Any = None  # runtime.live.LiveDirector once built
    task: asyncio.Task | None = None
    error: str | None = None
    report: Any = None  # runtime.live.LiveReport once run() returned
    config: dict = field(default_factory=dict)

    @property
    def link(self) -> str:
        return self.director.link if self.director is not None else "connecting"

    def problem(self) -> str:
        """Why this room keeps the service from being ready ("" = on air)."""
        if self.state == "failed":
            return f"room {self.name!r} failed: {self.error}"
        if self.link != "connected":
            return f"room {self.name!r} is {self.state}, LiveKit link {self.link}"
        return ""

    def summary(self) -> dict:
        return {"room": self.name, "session_id": self.session_id, "state": self.state, "link": self.link,
                "error": self.error, "started_at": self.started_at, **self.config}


def room_spool_dir(spool_dir: str, room: str) -> str:
    """A room's own feature-log spool, <spool_dir>/rooms/<room>: a spool directory has one writer (the service's
    /tick sessions hold <spool_dir>), and LiveDirector.run opens its own FeatureLog. Ship it with
    `AIOBS_SPOOL_DIR=<this dir> aiobs ingest`."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", room)[:64].lstrip(".") or "_"
    return str(Path(spool_dir) / "rooms" / f"{slug}-{hashlib.sha1(room.encode()).hexdigest()[:8]}")


def report_summary(rep, recent: int = 50) -> dict | None:
    """A LiveReport as JSON: the counts, and the last `recent` cuts with their reasons."""
    if rep is None:
        return None
    return {"session_id": rep.session_id, "ticks": rep.ticks, "cameras": sorted(rep.cameras),
            "cuts": len(rep.cuts),
            "recent_cuts": [{"t": t, "to": to, "reason": why} for t, to, why in rep.cuts[-recent:]],
            "aired_cuts": len(rep.aired_cuts), "overrides": rep.overrides,
            "rejected_overrides": rep.rejected_overrides, "unauthorised_overrides": rep.unauthorised_overrides,
            "failed_ticks": rep.failed_ticks, "missed_ticks": rep.missed_ticks, "late_cuts": rep.late_cuts,
            "program_frames": rep.program_frames, "program_audio_s": round(rep.program_audio_s, 3),
            "program_audio_dropped_s": round(rep.program_audio_dropped_s, 3),
            "first_program_frame_s": rep.first_program_frame_s, "narration_lines": len(rep.narration_lines),
            "narration_audio_s": round(rep.narration_audio_s, 3)}


@bentoml.service(name="aiobs-director", workers=1, traffic={"timeout": 30})
class Director:
    def __init__(self) -> None:
        self.settings = load_settings()
        problem = auth_problem(self.settings)
        if problem:
            raise RuntimeError(f"aiobs-director refuses to start: {problem}")
        if not self.settings.service_token.get_secret_value():
            log.warning("aiobs-director: no service token (AIOBS_SERVICE_ALLOW_ANONYMOUS=true): anyone who can "
                        "reach this port can direct")
        self.settings.ensure_dirs()
        os.environ.setdefault("YOLO_CONFIG_DIR", str(self.settings.data_dir / "ultralytics"))  # as the CLI does
        self.models = ModelManager.from_settings(self.settings)
        self.models.refresh()
        self._stop = threading.Event()
        self.models.start(self._stop)
        self.log = FeatureLog(self.settings.spool_dir, TABLES.values())
        self.sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently ticked first
        self._lock = threading.Lock()
        self.rooms: dict[str, _Room] = {}  # live rooms; touched only on the service's event loop
        self._ready_problems: list[str] = []

    @bentoml.on_deployment
    def check_settings() -> None:
        """Once, in `bentoml serve`'s own process before any worker starts: refuse to serve unauthenticated."""
        problem = auth_problem(load_settings())
        if problem:
            raise SystemExit(f"aiobs-director refuses to start: {problem}")

    @bentoml.on_shutdown
    async def close(self) -> None:
        """Stop every room (each director finishes its tick, disconnects and closes its feature log), then the rest."""
        rooms = list(self.rooms.values())
        for r in rooms:
            r.stop.set()
        tasks = [r.task for r in rooms if r.task is not None]
        if tasks:
            log.info("aiobs-director: shutting down: stopping %d live room(s)", len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=LIVE_SHUTDOWN_WAIT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for r in rooms:
            log.info("aiobs-director: room %r %s at shutdown: %s", r.name, r.state, report_summary(r.report))
        self._stop.set()
        self.log.close()

    async def __is_ready__(self) -> bool:
        """/readyz: not ready while a room this service directs is not on air (starting, its LiveKit link
        reconnecting or lost, or its director failed); live_status without a room says why."""
        problems = [p for p in (r.problem() for r in self.rooms.values()) if p]
        if problems != self._ready_problems:
            if problems:
                log.warning("aiobs-director: not ready: %s", "; ".join(problems))
            else:
                log.info("aiobs-director: ready (every live room is on air)")
            self._ready_problems = problems
        return not problems

    def _evict_idle(self, now: float) -> None:
        """Forget sessions without a tick for service_session_idle_s (called with the lock held)."""
        idle_s = self.settings.service_session_idle_s
        while self.sessions:
            sid, sess = next(iter(self.sessions.items()))
            if now - sess.seen < idle_s:
                break
            del self.sessions[sid]
            log.info("evicted session %r: idle %.0f s (service_session_idle_s %g) after %d tick(s)", sid,
                     now - sess.seen, idle_s, sess.core.k)

    def _session(self, session_id: str, now: float) -> _Session:
        sess = self.sessions.get(session_id)
        if sess is not None:
            return sess
        while len(self.sessions) >= self.settings.service_max_sessions:
            sid, old = self.sessions.popitem(last=False)
            log.warning("evicted session %r: idle %.1f s, the least recently ticked when %r started "
                        "(service_max_sessions %d reached)", sid, now - old.seen, session_id,
                        self.settings.service_max_sessions)
        core = DirectorCore(session_id, policy=self.settings.policy, tick_s=1.0 / self.settings.tick_hz,
                            rankers=self.models, room="service", sink=self.log)
        return _Session(core, -math.inf, now)

    @bentoml.api
    def tick(self, payload: TickBody, /) -> dict:
        """Score one tick of every camera and decide. Body (TickIn): {"session_id", "t" (the session clock in
        seconds, never going back; the same t again is allowed), "cameras": [{"camera_id", "features", "speaking",
        "safe_cut_wait_s", "quiet_at", "stale"}], "overrides": [{"action", "camera", "timeout_s", "operator"}]}.
        Needs `Authorization: Bearer <token>`. Every 4xx is {"error": "...", "detail": [{"type", "loc", "msg"}]}."""
        try:  # everything is validated before any session state moves
            req, inputs, ovs = parse_tick(payload)
        except BadRequest as e:
            return e.response()
        with self._lock:
            now = time.monotonic()
            self._evict_idle(now)
            sess = self._session(req.session_id, now)
            if req.t < sess.last_t:
                return BadRequest.one(
                    "clock_backwards", ["t"],
                    f"t {req.t!r} is before this session's last tick at {sess.last_t!r}: a session's clock never goes "
                    f"back (a new session_id starts a new clock)").response()
            r = sess.core.tick(req.t, inputs, ovs)
            sess.last_t, sess.seen = req.t, now
            self.sessions[req.session_id] = sess
            self.sessions.move_to_end(req.session_id)
            self.log.maybe_rotate()
        d = r.decision
        return {"session_id": req.session_id, "t": req.t, "variant": r.variant, "model_version": r.model_version,
                "scores": r.scores,
                "decision": {"program": d.program, "cut": d.cut, "from": d.from_camera, "to": d.to_camera,
                             "at": d.cut_time, "reason": d.reason, "detail": d.detail,
                             "transition": d.transition}}

    @bentoml.api
    def models_in_use(self) -> dict:
        """The registry versions the service is serving, and the last registry error if any."""
        return {"versions": self.models.versions(), "last_error": self.models.last_error,
                "challenger_share": self.models.challenger_share}


    # -- live rooms -------------------------------------------------------------------------------------------------
    @bentoml.api
    async def live_start(self, payload: LiveStartBody, /) -> dict:
        """Direct a LiveKit room (at the service's AIOBS_LIVEKIT_URL) until live_stop. Body (LiveStartIn): {"room",
        "policy": {policy field: value} over the service's policy, "program_delay_s", "program_audio",
        "program_size": [w, h], "program_fps", "narrate"}. Answers at once with the room's state ("starting": the
        models load and warm up, then the director joins); poll live_status. 409 while the room is directed
        already, 429 beyond service_max_rooms. Needs the bearer token."""
        try:
            req = parse_body(LiveStartIn, payload)
            policy = live_policy(self.settings.policy, req.policy)
        except BadRequest as e:
            return e.response()
        if not self.settings.livekit_url:
            return error_response(503, "live mode is not configured: set AIOBS_LIVEKIT_URL (and the API key and "
                                       "secret) for the service",
                                  [{"type": "not_configured", "loc": ["settings", "livekit_url"],
                                    "msg": "AIOBS_LIVEKIT_URL is empty"}])
        old = self.rooms.get(req.room)
        if old is not None and old.state != "failed":
            return error_response(409, f"room {req.room!r} is directed already ({old.state}): live_stop it first",
                                  [{"type": "room_running", "loc": ["room"],
                                    "msg": f"a director for {req.room!r} is {old.state}"}])
        others = [r for name, r in self.rooms.items() if name != req.room]
        if len(others) >= self.settings.service_max_rooms:
            names = ", ".join(f"{r.name!r} ({r.state})" for r in others)
            return error_response(429, f"at most {self.settings.service_max_rooms} live rooms "
                                       f"(service_max_rooms): {names}",
                                  [{"type": "too_many_rooms", "loc": ["room"],
                                    "msg": f"{len(others)} rooms are directed or failed; live_stop one first"}])
        settings = self.settings.model_copy(update={
            "livekit_room": req.room, "spool_dir": room_spool_dir(self.settings.spool_dir, req.room),
            **({"program_delay_s": req.program_delay_s} if req.program_delay_s is not None else {}),
            **({"program_audio": req.program_audio} if req.program_audio is not None else {}),
            **({"program_av_sync_ms": req.program_av_sync_ms} if req.program_av_sync_ms is not None else {})})
        config = {"spool_dir": settings.spool_dir,
                  "program_delay_s": settings.program_delay_s, "program_audio": settings.program_audio,
                  "program_av_sync_ms": settings.program_av_sync_ms,
                  "program_size": list(req.program_size), "program_fps": req.program_fps,
                  "policy": req.policy or {}, "narrate": req.narrate}
        room = _Room(req.room, f"live-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}", asyncio.Event(),
                     time.time(), config=config)
        if old is not None:
            log.info("aiobs-director: room %r restarted after it failed: %s", req.room, old.error)
        self.rooms[req.room] = room
        room.task = asyncio.create_task(self._direct(room, settings, policy, tuple(req.program_size),
                                                     req.program_fps, req.narrate), name=f"live:{req.room}")
        log.info("aiobs-director: room %r starting (session %s, %s)", req.room, room.session_id, config)
        return room.summary()

    async def _direct(self, room: _Room, settings: Settings, policy: PolicyConfig, size: tuple[int, int],
                      fps: int, narrate: bool = False) -> None:
        """The room's background task: build the director off the event loop, run it until the stop event."""
        live = None
        try:  # importing runtime.live (OpenCV, LiveKit) and loading the models both stay off the event loop
            live = await asyncio.to_thread(importlib.import_module, "runtime.live")
            room.director = await asyncio.to_thread(live.LiveDirector, settings, room.name, models=self.models,
                                                    policy=policy, program_size=size, program_fps=fps,
                                                    session_id=room.session_id, narrate=narrate)
            if room.stop.is_set():  # stopped while the models loaded
                room.director.close()
                room.state = "stopped"
                return
            room.state = "running"
            log.info("aiobs-director: room %r: director ready, joining %s", room.name, settings.livekit_url)
            room.report = await room.director.run(stop=room.stop)
            room.state = "stopped"
            log.info("aiobs-director: room %r stopped: %s", room.name, report_summary(room.report))
        except asyncio.CancelledError:
            room.state = "stopped"
            log.warning("aiobs-director: room %r cancelled", room.name)
            raise
        except Exception as e:  # noqa: BLE001 - a director that dies is never silent: status and log say why
            if live is not None and isinstance(e, live.LiveError):  # unreachable server, bad credentials: it says why
                room.state, room.error = "failed", str(e)
                log.error("aiobs-director: room %r failed: %s", room.name, e)
            else:
                room.state, room.error = "failed", f"{type(e).__name__}: {e}"
                log.exception("aiobs-director: room %r failed", room.name)
        finally:
            if room.director is not None and room.report is None:
                room.report = room.director.report

    def _room_or_404(self, payload: Any) -> _Room | JSONResponse:
        try:
            req = parse_body(LiveRoomIn, payload)
        except BadRequest as e:
            return e.response()
        if req.room is None:
            return BadRequest.one("missing", ["room"], "Field required").response()
        room = self.rooms.get(req.room)
        if room is None:
            return error_response(404, f"no live room {req.room!r} (live_status without a room lists them)",
                                  [{"type": "not_found", "loc": ["room"], "msg": f"{req.room!r} is not directed"}])
        return room

    @bentoml.api
    async def live_stop(self, payload: LiveRoomBody, /) -> dict:
        """Stop directing a room: the director finishes its tick, leaves the room and closes its feature log.
        Answers the session's report (and the error of a room that failed; stopping it clears it). 404 for a room
        not directed. Needs the bearer token."""
        room = self._room_or_404(payload)
        if isinstance(room, JSONResponse):
            return room
        if room.state in ("starting", "running"):
            room.state = "stopping"
        room.stop.set()
        if room.task is not None and not room.task.done():
            done, _ = await asyncio.wait([room.task], timeout=LIVE_STOP_WAIT_S)
            if not done:
                return {**room.summary(), "report": report_summary(room.report),
                        "note": f"still stopping after {LIVE_STOP_WAIT_S:g} s; live_status shows when it is done"}
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        log.info("aiobs-director: room %r stopped by an operator (%s)", room.name, room.state)
        return {**room.summary(), "report": report_summary(room.report)}

    @bentoml.api
    async def live_status(self, payload: LiveRoomBody, /) -> dict:
        """A room's director status (runtime/live.py LiveDirector.status(): link, program camera, every camera's
        score and features, recent cuts with reasons, variant and model version, tick health) with the room's state
        and error. Without a room: every room and why the service is not ready. 404 for a room not directed.
        Needs the bearer token (operator information)."""
        if isinstance(payload, dict) and payload.get("room") is None and set(payload) <= {"room"}:
            problems = [p for p in (r.problem() for r in self.rooms.values()) if p]
            return {"ready": not problems, "not_ready": problems, "max_rooms": self.settings.service_max_rooms,
                    "rooms": {name: r.summary() for name, r in self.rooms.items()}}
        room = self._room_or_404(payload)
        if isinstance(room, JSONResponse):
            return room
        status = room.director.status() if room.director is not None else {"room": room.name, "link": room.link}
        return {**status, **room.summary()}

    @bentoml.api
    async def live_override(self, payload: LiveOverrideBody, /) -> dict:
        """An operator's take / lock / release for a room the service directs, through the service's bearer token
        (the control page's buttons): the same validation and queue as an operator's `aiobs.override` data packet.
        Answers {"queued": true} or a 400 with the reason; 404 for a room not running."""
        try:
            req = parse_body(LiveOverrideIn, payload)
        except BadRequest as e:
            return e.response()
        room = self.rooms.get(req.room)
        if room is None or room.director is None or room.state != "running":
            return error_response(404, f"no running live room {req.room!r}",
                                  [{"type": "not_found", "loc": ["room"], "msg": f"{req.room!r} is not running"}])
        msg = {"action": req.action, "camera": req.camera, "operator": req.operator}
        if req.timeout_s is not None:
            msg["timeout_s"] = req.timeout_s
        why = room.director.override(msg, req.operator or "service")
        if why is not None:
            return BadRequest.one("value_error", ["camera"], why).response()
        return {"queued": True, "room": req.room}

    @bentoml.api
    async def live_token(self, payload: LiveTokenBody, /) -> dict:
        """A LiveKit token with the operator role for a room the service directs (the control page joins with it:
        it watches the program and sends take/lock/release on `aiobs.override`, which the director obeys from
        operators only). Body (LiveTokenIn): {"room", "identity"}; the participant is "operator:<identity>".
        Answers {"url" (the LiveKit URL for browsers), "token", "identity", "room", "ttl_s"}. 404 for a room not
        directed, 503 without LiveKit settings. Needs the bearer token."""
        try:
            req = parse_body(LiveTokenIn, payload)
        except BadRequest as e:
            return e.response()
        url = browser_livekit_url(self.settings)
        if not (url and self.settings.livekit_api_key and self.settings.livekit_api_secret):
            return error_response(503, "live mode is not configured: set AIOBS_LIVEKIT_URL, AIOBS_LIVEKIT_API_KEY "
                                       "and AIOBS_LIVEKIT_API_SECRET for the service",
                                  [{"type": "not_configured", "loc": ["settings", "livekit_url"],
                                    "msg": "the LiveKit URL, API key or secret is empty"}])
        if req.room not in self.rooms:
            return error_response(404, f"no live room {req.room!r}: the service mints operator tokens for the rooms "
                                       f"it directs (live_start)",
                                  [{"type": "not_found", "loc": ["room"], "msg": f"{req.room!r} is not directed"}])
        from runtime.tokens import TokenError, mint

        identity = req.identity if req.identity.startswith(OPERATOR_PREFIX) else OPERATOR_PREFIX + req.identity
        try:  # the first call imports the LiveKit API package: off the event loop
            token = await asyncio.to_thread(mint, self.settings, "operator", identity, req.room,
                                            OPERATOR_TOKEN_TTL_S, name=req.identity)
        except TokenError as e:
            return BadRequest.one("value_error", ["identity"], str(e)).response()
        log.info("aiobs-director: room %r: operator token minted for %r", req.room, identity)
        return JSONResponse({"url": url, "token": token, "identity": identity, "room": req.room,
                             "ttl_s": OPERATOR_TOKEN_TTL_S}, headers={"Cache-Control": "no-store"})

Director.add_asgi_middleware(ServiceGuard)
Director.mount_asgi_app(control_app(), path="/control", name="control")
