"""The BentoML service: the director's ranking + decision core over HTTP (`bentoml serve bento.service:Director`).

A live runtime (or any other front end) posts one tick of scene features per camera; the service scores them with
the ranker the model manager assigns to the session (champion, an A/B share for the challenger, or the rule
baseline), runs that session's switching policy, logs every row and decision to the feature-log spool, and answers
with the scores and the decision. Manual overrides ride along with a tick. Thin by design: the logic is in
features/, ranker/ and runtime/.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Literal

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
from bentoml.exceptions import InvalidArgument  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from features.extract import SCENE_FEATURES  # noqa: E402
from features.schema import CAMERA_TICKS, DECISIONS, OVERRIDES  # noqa: E402
from features.spool import FeatureLog  # noqa: E402
from ranker.policy import CameraContext, Override, PolicyConfig, SwitchingPolicy  # noqa: E402
from runtime.model_manager import ModelManager  # noqa: E402
from runtime.settings import load_settings  # noqa: E402


class CameraTick(BaseModel):
    camera_id: str = Field(min_length=1, max_length=64)
    features: dict[str, float | None] = Field(description="scene features by contract name; missing = unknown")
    speaking: bool = False
    safe_cut_wait_s: float = Field(0.0, ge=0)
    stale: bool = False


class OverrideIn(BaseModel):
    action: Literal["take", "lock", "release"]
    camera: str = ""
    timeout_s: float | None = Field(None, gt=0)
    operator: str = ""


@bentoml.service(name="aiobs-director", workers=1, traffic={"timeout": 10})
class Director:
    def __init__(self) -> None:
        self.settings = load_settings()
        self.settings.ensure_dirs()
        self.models = ModelManager(self.settings.mlflow_tracking_uri,
                                   challenger_share=float(os.environ.get("AIOBS_CHALLENGER_SHARE", "0.0")))
        self.models.refresh()
        self._stop = threading.Event()
        self.models.start(self._stop)
        self.log = FeatureLog(self.settings.spool_dir, [CAMERA_TICKS, DECISIONS, OVERRIDES])
        self.policies: dict[str, SwitchingPolicy] = {}
        self.ticks: dict[str, int] = {}
        self._lock = threading.Lock()

    @bentoml.on_shutdown
    def close(self) -> None:
        self._stop.set()
        self.log.close()

    @bentoml.api
    def tick(self, session_id: str, t: float, cameras: list[CameraTick], overrides: list[OverrideIn] = []) -> dict:
        """Score one tick of every camera and decide. `t` is the session clock in seconds."""
        if not cameras:
            raise InvalidArgument("a tick needs at least one camera")
        ids = [c.camera_id for c in cameras]
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"duplicate camera ids in one tick: {ids}")
        unknown = sorted({k for c in cameras for k in c.features} - set(SCENE_FEATURES))
        if unknown:
            raise InvalidArgument(f"unknown feature(s) {unknown}; the contract's scene features are "
                                  f"{list(SCENE_FEATURES)}")
        x = np.full((len(cameras), len(SCENE_FEATURES)), np.nan, np.float32)
        for i, c in enumerate(cameras):
            for k, v in c.features.items():
                x[i, SCENE_FEATURES.index(k)] = np.nan if v is None else v
        try:
            ovs = [Override(o.action, o.camera, o.timeout_s, o.operator) for o in overrides]
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        variant, ranker = self.models.ranker_for(session_id)
        scores = np.asarray(ranker.score(x), dtype=np.float64)
        score_map = {c: float(s) for c, s in zip(ids, scores)}
        ctx = {c.camera_id: CameraContext(speaking=c.speaking, safe_cut_at=t + c.safe_cut_wait_s, stale=c.stale)
               for c in cameras}
        with self._lock:
            policy = self.policies.setdefault(session_id, SwitchingPolicy(PolicyConfig(), 1.0 / self.settings.tick_hz))
            k = self.ticks.get(session_id, 0)
            self.ticks[session_id] = k + 1
            d = policy.step(t, score_map, ctx, ovs)
            ts = time.time()  # wall clock of the tick; `t` is the session clock the policy runs on
            for c, s in zip(cameras, scores):
                row = {f: v for f, v in c.features.items() if v is not None}  # missing -> default / NULL
                self.log.append("camera_ticks", {**row, "session_id": session_id, "room": "live", "ts": ts,
                                                 "tick": k, "camera_id": c.camera_id, "speaking": c.speaking,
                                                 "safe_cut_wait_s": c.safe_cut_wait_s, "stale": c.stale,
                                                 "on_program": d.program == c.camera_id, "score": float(s),
                                                 "model_version": str(ranker.version), "ab_variant": variant})
            self.log.append("decisions", d.log_row(session_id=session_id, room="live", ts=ts, tick=k,
                                                  model_version=str(ranker.version), ab_variant=variant,
                                                  supervised=bool(ovs)))
            for o in ovs:
                self.log.append("overrides", {"session_id": session_id, "room": "live", "ts": ts, "tick": k,
                                              "operator": o.operator, "action": o.action, "camera_id": o.camera,
                                              "timeout_s": o.timeout_s})
            self.log.maybe_rotate()
        return {"session_id": session_id, "t": t, "variant": variant, "model_version": str(ranker.version),
                "scores": score_map,
                "decision": {"program": d.program, "cut": d.cut, "from": d.from_camera, "to": d.to_camera,
                             "at": d.cut_time, "reason": d.reason, "detail": d.detail,
                             "transition": d.transition}}

    @bentoml.api
    def models_in_use(self) -> dict:
        """The registry versions the service is serving, and the last registry error if any."""
        return {"versions": self.models.versions(), "last_error": self.models.last_error,
                "challenger_share": self.models.challenger_share}
