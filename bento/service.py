"""The BentoML service: the director's ranking + decision core over HTTP (`bentoml serve bento.service:Director`).

A live runtime (or any other front end) posts one tick of scene features per camera; the service scores them with
the ranker the model manager assigns to the session (champion, an A/B share for the challenger, or the rule
baseline), runs that session's switching policy, logs every row and decision to the feature-log spool, and answers
with the scores and the decision. Manual overrides ride along with a tick. Thin by design: the logic is in
features/, ranker/ and runtime/.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Literal

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import bentoml  # noqa: E402
from bentoml.exceptions import InvalidArgument  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from features.schema import CAMERA_TICKS, DECISIONS, OVERRIDES  # noqa: E402
from features.spool import FeatureLog  # noqa: E402
from ranker.core import CameraTick as CoreCameraTick  # noqa: E402
from ranker.core import DirectorCore  # noqa: E402
from ranker.policy import MAX_ID_LEN, Override  # noqa: E402
from runtime.model_manager import ModelManager  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

MAX_CAMERAS = 64


class CameraTick(BaseModel):
    camera_id: str = Field(min_length=1, max_length=MAX_ID_LEN)
    features: dict[str, float | None] = Field(description="scene features by contract name; missing = the "
                                                          "contract's default (NULL for the VLM features)")
    speaking: bool = False
    safe_cut_wait_s: float = Field(0.0, ge=0, le=60)
    quiet_at: float | None = Field(None, description="session time inside a pause of this camera's audio during "
                                                     "the last tick, where a cut may be placed")
    stale: bool = False


class OverrideIn(BaseModel):
    action: Literal["take", "lock", "release"]
    camera: str = Field("", max_length=MAX_ID_LEN)
    timeout_s: float | None = Field(None, gt=0)
    operator: str = Field("", max_length=MAX_ID_LEN)


@bentoml.service(name="aiobs-director", workers=1, traffic={"timeout": 10})
class Director:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.settings.ensure_dirs()
        self.models = ModelManager(self.settings.mlflow_tracking_uri, challenger_share=self.settings.challenger_share,
                                   policy=self.settings.policy)
        self.models.refresh()
        self._stop = threading.Event()
        self.models.start(self._stop)
        self.log = FeatureLog(self.settings.spool_dir, [CAMERA_TICKS, DECISIONS, OVERRIDES])
        self.sessions: dict[str, DirectorCore] = {}
        self._lock = threading.Lock()

    @bentoml.on_shutdown
    def close(self) -> None:
        self._stop.set()
        self.log.close()

    @bentoml.api
    def tick(self, session_id: str = Field(min_length=1, max_length=MAX_ID_LEN), t: float = Field(ge=0),
             cameras: list[CameraTick] = Field(min_length=1, max_length=MAX_CAMERAS),
             overrides: list[OverrideIn] = Field(default_factory=list, max_length=16)) -> dict:
        """Score one tick of every camera and decide. `t` is the session clock in seconds."""
        if not math.isfinite(t):
            raise InvalidArgument("t must be a finite number of seconds")
        ids = [c.camera_id for c in cameras]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"duplicate camera ids in one tick: {ids}")
        try:  # everything is validated before any session state moves
            inputs = [CoreCameraTick.from_features(c.camera_id, c.features, speaking=c.speaking,
                                                   safe_cut_wait_s=c.safe_cut_wait_s, quiet_at=c.quiet_at,
                                                   stale=c.stale) for c in cameras]
            ovs = [Override(o.action, o.camera, o.timeout_s, o.operator) for o in overrides]
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        with self._lock:
            core = self.sessions.get(session_id)
            if core is None:
                core = self.sessions[session_id] = DirectorCore(
                    session_id, policy=self.settings.policy, tick_s=1.0 / self.settings.tick_hz, rankers=self.models,
                    room="service", sink=self.log)
            r = core.tick(t, inputs, ovs)
            self.log.maybe_rotate()
        d = r.decision
        return {"session_id": session_id, "t": t, "variant": r.variant, "model_version": r.model_version,
                "scores": r.scores,
                "decision": {"program": d.program, "cut": d.cut, "from": d.from_camera, "to": d.to_camera,
                             "at": d.cut_time, "reason": d.reason, "detail": d.detail,
                             "transition": d.transition}}

    @bentoml.api
    def models_in_use(self) -> dict:
        """The registry versions the service is serving, and the last registry error if any."""
        return {"versions": self.models.versions(), "last_error": self.models.last_error,
                "challenger_share": self.models.challenger_share}
