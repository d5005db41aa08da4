"""Which ranker scores a session: the registry's `champion`, its `challenger` for an A/B share of traffic, or the
rule baseline when the registry cannot serve one.

A/B assignment (`ab_unit`): per `session` (a sticky hash of the session id: the same session or room always gets the
same arm; for fleets of rooms), or per `block` of `ab_block_s` seconds within a session (alternating, for a single
room: block k goes to the challenger when k * share crosses a whole number, so share 0.5 alternates). `shadow`: the
arm not acting scores every tick too, and the director core logs what it would have decided (never acted on).

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
    ab_unit: str = "session"  # session | block
    ab_block_s: float = 300.0
    shadow: bool = False

    @classmethod
    def from_settings(cls, s, **kw) -> "ModelManager":
        return cls(s.mlflow_tracking_uri, challenger_share=s.challenger_share, policy=s.policy, ab_unit=s.ab_unit,
                   ab_block_s=s.ab_block_s, shadow=s.ab_shadow, **kw)

    def __post_init__(self) -> None:
        if not 0.0 <= self.challenger_share <= 1.0:
            raise ValueError("challenger_share must be within 0..1")
        if self.ab_unit not in ("session", "block") or not self.ab_block_s > 0:
            raise ValueError("ab_unit must be 'session' or 'block', with ab_block_s > 0")
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
    def variant(self, session_id: str, t: float | None = None) -> str:
        """Deterministic A/B arm of a session (at session time t, when the unit is a time block)."""
        with self._lock:
            champion, challenger = self._slots[CHAMPION].ranker, self._slots[CHALLENGER].ranker
        if challenger is not None and self._challenger_turn(session_id, t):
            return CHALLENGER
        return CHAMPION if champion is not None else "baseline"

    def _challenger_turn(self, session_id: str, t: float | None) -> bool:
        share = self.challenger_share
        if self.ab_unit == "block":
            k = int((t or 0.0) // self.ab_block_s) + zlib.crc32(session_id.encode()) % 97  # sessions start apart
            return int((k + 1) * share + 1e-9) > int(k * share + 1e-9)
        return zlib.crc32(session_id.encode()) % 10_000 / 10_000 < share

    def ranker_for(self, session_id: str, t: float | None = None):
        """(variant, ranker) for the tick of a session at session time t."""
        arm = self.variant(session_id, t)
        if arm == "baseline":
            return arm, self.fallback
        with self._lock:
            return arm, self._slots[arm].ranker

    def policy_ranker(self, session_id: str):
        """The ranker whose learned policy timing directs the whole session: its arm's with per-session A/B; the
        champion's with time blocks (both arms then run under one timing: the blocks compare the rankers)."""
        if self.ab_unit == "block":
            with self._lock:
                champion = self._slots[CHAMPION].ranker
            return champion if champion is not None else self.fallback
        return self.ranker_for(session_id)[1]

    def shadow_for(self, session_id: str, t: float | None = None):
        """(variant, ranker) of the arm that is not acting, when shadow mode is on and both arms are loaded."""
        if not self.shadow:
            return None
        with self._lock:
            if self._slots[CHAMPION].ranker is None or self._slots[CHALLENGER].ranker is None:
                return None
        arm = CHAMPION if self.variant(session_id, t) == CHALLENGER else CHALLENGER
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
