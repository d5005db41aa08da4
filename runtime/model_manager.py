"""Which ranker scores a session: the registry's `champion`, its `challenger` for an A/B share of sessions, or the
rule baseline when the registry cannot serve one.

The manager follows the MLflow aliases (`refresh()`, or a polling thread from `start()`): a new version is loaded
off to the side and swapped in with one reference assignment, so a tick in progress keeps the ranker it started
with and the next tick gets the new one (hot-swap between ticks, no restart). A registry that is unreachable or a
model that fails to load never takes the director down: the current ranker stays, and the reason is kept.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from dataclasses import dataclass, field

from ranker.baseline import WeightedBaselineRanker
from ranker.policy import PolicyConfig
from ranker.registry import CHALLENGER, CHAMPION, MODEL_NAME

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    version: str | None = None
    ranker: object | None = None


@dataclass
class ModelManager:
    tracking_uri: str
    name: str = MODEL_NAME
    challenger_share: float = 0.0  # share of sessions (0..1) scored by the challenger
    poll_s: float = 60.0
    fallback: object = field(default_factory=WeightedBaselineRanker)
    policy: PolicyConfig | None = None  # the policy this runtime directs with (warned about when a model differs)

    def __post_init__(self) -> None:
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError("challenger_share must be within 0..1")
        self._slots = {CHAMPION: _Slot(), CHALLENGER: _Slot()}
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None

    # -- registry ----------------------------------------------------------------------------------------------------
    def refresh(self) -> dict[str, str | None]:
        """Load any alias whose version changed; returns {alias: version} now in use."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # a poll must fail fast when the registry is down (MLflow's default retries back off for minutes)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow import MlflowClient

        errors = []
        for alias, slot in self._slots.items():
            try:
                mv = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri).get_model_version_by_alias(self.name, alias)
            except Exception as e:  # noqa: BLE001 - no such alias, or the registry is unreachable
                if "not found" not in str(e).lower() and "RESOURCE_DOES_NOT_EXIST" not in str(e):
                    errors.append(f"{alias}: registry unreachable ({str(e).splitlines()[0][:160]})")
                continue
            version = str(mv.version)
            if version == slot.version:
                continue
            try:
                ranker = self._load(version)
            except Exception as e:  # noqa: BLE001 - a bad model keeps the current one in service
                errors.append(f"{alias} v{version} failed to load: {str(e).splitlines()[0][:160]}")
                continue
            self._check_policy(version, (mv.tags or {}).get("policy_config"))
            with self._lock:
                self._slots[alias] = _Slot(version, ranker)
            log.info("model manager: %s is now %s v%s", alias, self.name, version)
        self.last_error = "; ".join(errors) or None
        if self.last_error:
            log.warning("model manager: %s (serving what was loaded before)", self.last_error)
        return self.versions()

    def _check_policy(self, version: str, logged: str | None) -> None:
        """A model was gated under one policy configuration; running it under another is allowed but never silent."""
        if self.policy is None:
            return
        ours = json.loads(self.policy.to_json())
        if logged is None:
            log.warning("model manager: %s v%s records no policy configuration; this runtime directs with %s",
                        self.name, version, self.policy.to_json())
            return
        # a field the model's record lacks (recorded before it existed) counts as its default
        theirs = {**json.loads(PolicyConfig().to_json()),
                  **{k: v for k, v in json.loads(logged).items() if k != "tick_s"}}
        if theirs != ours:
            diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours))
                    if theirs.get(k) != ours.get(k)}
            log.warning("model manager: %s v%s was evaluated under policy %s but this runtime directs with %s "
                        "(differences, model vs runtime: %s)", self.name, version, logged, self.policy.to_json(),
                        diff)

    def _load(self, version: str):
        from ranker.xgb import XGBoostRanker

        return XGBoostRanker.load(f"models:/{self.name}/{version}", tracking_uri=self.tracking_uri)  # "name/version"

    def versions(self) -> dict[str, str | None]:
        with self._lock:
            return {alias: slot.version for alias, slot in self._slots.items()}

    # -- per session -------------------------------------------------------------------------------------------------
    def variant(self, session_id: str) -> str:
        """Deterministic A/B arm of a session: the same session always gets the same arm."""
        with self._lock:
            champion, challenger = self._slots[CHAMPION].ranker, self._slots[CHALLENGER].ranker
        bucket = zlib.crc32(session_id.encode()) % 10_000 / 10_000
        if challenger is not None and bucket < self.challenger_share:
            return CHALLENGER
        return CHAMPION if champion is not None else "baseline"

    def ranker_for(self, session_id: str):
        """(variant, ranker) for the next tick of a session."""
        arm = self.variant(session_id)
        if arm == "baseline":
            return arm, self.fallback
        with self._lock:
            return arm, self._slots[arm].ranker

    # -- background polling ------------------------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> threading.Thread:
        def loop():
            while not stop.is_set():
                self.refresh()
                stop.wait(self.poll_s)

        self._thread = threading.Thread(target=loop, name="model-manager", daemon=True)
        self._thread.start()
        return self._thread
