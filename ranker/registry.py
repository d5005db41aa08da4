"""MLflow registry helpers: log and register a trained ranker, alias it `challenger`, and promote it to `champion`
only when the gate passes. The gate's reason is recorded on the model version (tag `gate` and its description) and
on the run either way.

The promotion rule (`Gate`):

- the reference is the current champion, evaluated on the same held-out sessions under the same policy; the rule
  baseline only when there is no champion at all;
- a champion that exists but cannot be evaluated (its artifact does not load, its feature contract differs, its
  evaluation raises) BLOCKS promotion: the new model stays `challenger`, with the reason, and is never compared with
  the baseline instead;
- cut-point top-1 must beat the reference by `min(margin, headroom_share * (1 - reference))`: the absolute margin
  (0.02) while the reference leaves room for it, at most a share (half) of the reference's remaining headroom near
  the top, so a better model can always win (after a 0.996 champion, 0.998 is needed: 0.999 is promoted, 0.996 is
  not). With a positive margin a tie is never promoted;
- the replayed program must not regress (frame agreement, ping-pong, cuts inside speech);
- on the real-media evaluation set (runtime/realset.py: the real analysis of recorded conversations with ground
  truth), the candidate's program must follow the speaker at least as well as the rule baseline's AND the champion's
  (within `max_follow_drop`) and cut inside words no more often: a model that learned from simulated data alone and is
  harmful on real footage is never promoted. Without a real-media evaluation (`real` None) promotion is refused
  unless the gate is told `require_real=False` (tests of the gate's other rules).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.extract import RANKER_FEATURES
from features.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

MODEL_NAME = "aiobs-ranker"
EXPERIMENT = "aiobs-ranker"
CHAMPION, CHALLENGER = "champion", "challenger"
POLICY_TAG = "policy_config"  # model-version tag: the switching-policy configuration it was evaluated under


@dataclass(frozen=True)
class Gate:
    margin: float = 0.02  # cut-point top-1 must beat the reference by this much (capped by the headroom, below)
    headroom_share: float = 0.5  # ... or by this share of the reference's headroom (1 - top-1), whichever is smaller
    max_agreement_drop: float = 0.0  # replay frame agreement may not fall below the reference's by more
    max_ping_pong_increase: int = 0
    max_cuts_in_speech_increase: int = 0  # replay cuts inside the outgoing camera's own speech
    max_follow_drop: float = 0.02  # real media: speaker follow may trail the baseline's / champion's by at most this
    max_mid_word_increase: int = 0  # real media: cuts inside words beyond the baseline's / champion's
    require_real: bool = True  # no promotion without a real-media evaluation

    def check_real(self, challenger: dict | None, references: dict[str, dict]) -> list[str]:
        """Problems of the candidate on the real-media set against each reference (baseline, champion)."""
        if challenger is None:
            return ["no real-media evaluation"] if self.require_real else []
        problems = []
        follow = challenger.get("real_speaker_follow", float("nan"))
        for name, ref in references.items():
            rf = ref.get("real_speaker_follow", float("nan"))
            if not np.isfinite(follow) or (np.isfinite(rf) and follow < rf - self.max_follow_drop):
                problems.append(f"real-media speaker follow {follow:.3f} < {name}'s {rf:.3f}")
            if challenger.get("real_mid_word_cuts", 0) > ref.get("real_mid_word_cuts", 0) + self.max_mid_word_increase:
                problems.append(f"real-media mid-word cuts {challenger['real_mid_word_cuts']} > {name}'s "
                                f"{ref['real_mid_word_cuts']}")
        return problems

    def required_gain(self, reference_top1: float) -> float:
        """How much cut-point top-1 must improve on `reference_top1`: `margin`, capped at `headroom_share` of the
        remaining headroom `1 - reference_top1`, so the requirement never exceeds what is left to gain."""
        headroom = max(0.0, 1.0 - float(reference_top1))
        return min(self.margin, self.headroom_share * headroom)

    def check(self, challenger: dict, reference: dict, reference_name: str) -> tuple[bool, str]:
        problems = []
        ref, new = reference["cut_top1"], challenger["cut_top1"]
        gain = self.required_gain(ref) if np.isfinite(ref) else float("nan")
        need = ref + gain
        # with a positive margin the challenger must also be strictly better (a perfect champion is never replaced
        # by a tie); NaN (no cut points) never passes
        if not (new >= need and (self.margin <= 0 or new > ref)):
            problems.append(f"cut_top1 {new:.4f} < {reference_name} {ref:.4f} + required gain {gain:.4f} "
                            f"(margin {self.margin:.3f}, capped at {self.headroom_share:.2f} of the headroom)")
        if challenger["replay_frame_agreement"] < reference["replay_frame_agreement"] - self.max_agreement_drop:
            problems.append(f"replay agreement {challenger['replay_frame_agreement']:.3f} regresses from "
                            f"{reference_name}'s {reference['replay_frame_agreement']:.3f}")
        if challenger["replay_ping_pong"] > reference["replay_ping_pong"] + self.max_ping_pong_increase:
            problems.append(f"ping-pong {challenger['replay_ping_pong']} > {reference_name}'s "
                            f"{reference['replay_ping_pong']}")
        if challenger["replay_cuts_in_speech"] > reference["replay_cuts_in_speech"] + self.max_cuts_in_speech_increase:
            problems.append(f"cuts in speech {challenger['replay_cuts_in_speech']} > {reference_name}'s "
                            f"{reference['replay_cuts_in_speech']}")
        if problems:
            return False, "stays challenger: " + "; ".join(problems)
        return True, (f"promoted: cut_top1 {new:.4f} vs {reference_name} {ref:.4f} (+{gain:.4f} required), "
                      f"replay agreement {challenger['replay_frame_agreement']:.3f} vs "
                      f"{reference['replay_frame_agreement']:.3f}")

    def decide(self, challenger: dict, reference: dict, reference_name: str,
               champion_error: str | None = None, real: dict[str, dict] | None = None) -> tuple[bool, str]:
        """`check`, except that a champion that exists but could not be evaluated blocks promotion outright, and
        the real-media rule (`real`: "learned", "baseline" and, when there is one, "champion" -> evaluate_real's
        figures) must hold too."""
        promoted, reason = self.check(challenger, reference, reference_name)
        real = real or {}
        problems = self.check_real(real.get("learned"), {k: v for k, v in real.items() if k != "learned"})
        if problems:
            reason = ("stays challenger: " + "; ".join(problems) + (f"; {reason[len('stays challenger: '):]}"
                                                                   if not promoted else f" [{reason}]"))
            promoted = False
        elif real.get("learned") is not None and promoted:
            reason += f", real-media speaker follow {real['learned']['real_speaker_follow']:.3f}"
        if champion_error:
            return False, (f"stays challenger: the champion could not be evaluated ({champion_error}); no promotion "
                           f"without a comparison with it [vs {reference_name}: {reason}]")
        return promoted, reason


@dataclass
class Registration:
    version: str
    model_uri: str
    run_id: str
    promoted: bool
    reason: str


# MLflow access: always through an explicit MlflowClient(tracking_uri); this module never touches MLflow's
# process-global state (tracking URI, active experiment, active run), so several stores can be used side by side.

def client_for(tracking_uri: str):
    """An MlflowClient bound to `tracking_uri` for tracking *and* registry (never the process-global URIs)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def artifact_location(tracking_uri: str, artifacts_dir: str | None) -> str | None:
    """The artifact root for experiments created in this store: `artifacts_dir` (settings.mlflow_artifacts_dir), or,
    when none is given and the store is a local sqlite file, `artifacts/` next to the database (the settings'
    default layout). Never MLflow's own default, `./mlruns` under the current working directory."""
    if artifacts_dir:
        return Path(artifacts_dir).expanduser().resolve().as_uri()
    if tracking_uri.startswith("sqlite:///") and tracking_uri != "sqlite:///:memory:":
        return (Path(tracking_uri[len("sqlite:///"):]).expanduser().resolve().parent / "artifacts").as_uri()
    if tracking_uri.startswith(("http://", "https://", "databricks", "file:")) or "://" not in tracking_uri:
        return None  # a tracking server (or a file store) owns its artifact root
    raise ValueError(f"MLflow store {tracking_uri.split('://')[0]}://...: give an artifacts dir "
                     "(settings.mlflow_artifacts_dir), or MLflow would write artifacts under ./mlruns")


def ensure_experiment(client, name: str, tracking_uri: str, artifacts_dir: str | None) -> str:
    """The id of experiment `name`, created with an explicit artifact location when it does not exist yet."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = artifact_location(tracking_uri, artifacts_dir)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another worker
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    expected = artifact_location(tracking_uri, artifacts_dir)
    if expected and exp.artifact_location.rstrip("/") != expected.rstrip("/"):
        log.warning("MLflow experiment %r keeps its artifacts at %s, not under %s (created before; an experiment's "
                    "artifact location cannot change)", name, exp.artifact_location, expected)
    return exp.experiment_id


def log_batch(client, run_id: str, *, metrics=(), params: dict | None = None, tags: dict | None = None) -> None:
    """client.log_batch within MLflow's per-request limits (100 params/tags, 1000 metrics)."""
    from mlflow.entities import Param, RunTag

    ps = [Param(str(k), str(v)) for k, v in (params or {}).items()]
    ts = [RunTag(str(k), str(v)) for k, v in (tags or {}).items()]
    ms = list(metrics)
    for i in range(0, max(len(ps), len(ts), 1), 100):
        if ps[i:i + 100] or ts[i:i + 100]:
            client.log_batch(run_id, params=ps[i:i + 100], tags=ts[i:i + 100])
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])


def start_run(client, experiment_id: str, run_name: str, start_time_ms: int | None = None,
              tags: dict | None = None):
    """client.create_run with the context tags mlflow.start_run would add (user, source, git commit)."""
    from mlflow.tracking.context.registry import resolve_tags

    try:
        all_tags = resolve_tags(tags or {})
    except Exception:  # noqa: BLE001 - context tags are a nicety
        all_tags = dict(tags or {})
    return client.create_run(experiment_id, start_time=start_time_ms, tags=all_tags, run_name=run_name)


def champion_uri(name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{CHAMPION}"


def has_alias(tracking_uri: str, alias: str, name: str = MODEL_NAME) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client_for(tracking_uri).get_model_version_by_alias(name, alias)
        return True
    except MlflowException:
        return False


def policy_config_of(tracking_uri: str, version: str | int, name: str = MODEL_NAME) -> dict | None:
    """The switching-policy configuration a registered version was evaluated under (its `policy_config` tag), or
    None when it was registered without one. `version` is a version number or an alias (`champion`)."""
    client = client_for(tracking_uri)
    v = str(version)
    mv = client.get_model_version(name, v) if v.isdigit() else client.get_model_version_by_alias(name, v)
    raw = (mv.tags or {}).get(POLICY_TAG)
    return json.loads(raw) if raw else None


def register(booster, *, tracking_uri: str, artifacts_dir: str | None, metrics: dict, reference: dict,
             reference_name: str, params: dict, plots: dict[str, str] | None = None, gate: Gate | None = None,
             data_info: dict | None = None, policy_config: dict | None = None,
             champion_error: str | None = None, name: str = MODEL_NAME,
             real: dict[str, dict] | None = None) -> Registration:
    """Log the booster with signature + contract + metrics, register it, alias it challenger, maybe champion.

    `policy_config` (the switching-policy configuration the model was evaluated under, a flat JSON-able dict) is
    logged as run params `policy.<key>` and recorded on the model version as tag `policy_config` (JSON).
    `champion_error` (why an existing champion could not be evaluated) blocks promotion: the version is aliased
    `challenger` only, and the reason is its `gate` tag, its description and the run's `gate` / `champion_error` tags.
    Everything goes through an explicit MlflowClient: MLflow's global tracking URI and active run are not touched.
    """
    import tempfile

    import mlflow.xgboost
    import pandas as pd
    from mlflow.entities import LoggedModelOutput, Metric, RunStatus
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model, infer_signature
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
    from mlflow.utils.time import get_current_time_millis

    client = client_for(tracking_uri)
    exp_id = ensure_experiment(client, EXPERIMENT, tracking_uri, artifacts_dir)
    gate = gate or Gate()
    promoted, reason = gate.decide(metrics, reference, reference_name, champion_error, real)
    if champion_error:
        log.warning("%s: %s", name, reason)
    policy_json = json.dumps(policy_config, sort_keys=True) if policy_config is not None else None
    example = pd.DataFrame(np.zeros((5, len(RANKER_FEATURES)), np.float32), columns=list(RANKER_FEATURES))
    signature = infer_signature(example, np.zeros(5, np.float32))
    run_params = {**params, **{f"policy.{k}": v for k, v in (policy_config or {}).items()}}
    run = start_run(client, exp_id, "ranker-train", get_current_time_millis())
    run_id = run.info.run_id
    try:
        log_batch(client, run_id, params=run_params,
                  tags={"feature_schema_version": str(SCHEMA_VERSION), "gate": reason, "reference": reference_name,
                        "promoted": str(promoted).lower(),
                        **({"champion_error": champion_error[:5000]} if champion_error else {}),
                        **{f"data.{k}": str(v) for k, v in (data_info or {}).items()}})
        for path in (plots or {}).values():
            client.log_artifact(run_id, path, artifact_path="plots")

        # the model: an MLflow 3 LoggedModel (what mlflow.xgboost.log_model creates), written with the client
        model = client.create_logged_model(exp_id, name="ranker", source_run_id=run_id,
                                           params={k: str(v) for k, v in run_params.items()},
                                           model_type="xgboost-ranker")
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        now = get_current_time_millis()
        log_batch(client, run_id, metrics=[
            *(Metric(k, float(v), now, 0, model_id=model.model_id) for k, v in metrics.items() if _finite(v)),
            *(Metric(f"{reference_name}_{k}", float(v), now, 0, model_id=model.model_id)
              for k, v in reference.items() if _finite(v))])
        try:
            with tempfile.TemporaryDirectory(prefix="aiobs-ranker-") as tmp:
                local = str(Path(tmp) / "model")
                mlflow.xgboost.save_model(
                    booster, local, signature=signature, model_format="ubj",
                    mlflow_model=Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                                       run_id=run_id, model_id=model.model_id),
                    metadata={"feature_schema_version": SCHEMA_VERSION, "features": list(RANKER_FEATURES)})
                client.log_model_artifacts(model.model_id, local)
        except BaseException:
            client.finalize_logged_model(model.model_id, "FAILED")
            raise
        client.finalize_logged_model(model.model_id, "READY")

        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        # source = the model's artifact location (a `models:/<model_id>` source would make MLflow's sqlalchemy
        # registry resolve it through the *global* tracking URI)
        tags = {"feature_schema_version": str(SCHEMA_VERSION), "features": json.dumps(list(RANKER_FEATURES)),
                "gate": reason, "metrics": json.dumps({k: _round(v) for k, v in metrics.items()}),
                **({POLICY_TAG: policy_json} if policy_json is not None else {}),
                **({"champion_error": champion_error[:5000]} if champion_error else {})}
        mv = client.create_model_version(name, source=model.artifact_location, run_id=run_id, tags=tags,
                                         description=reason, model_id=model.model_id)
        version = str(mv.version)
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": version}])})
        client.set_registered_model_alias(name, CHALLENGER, version)
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED), get_current_time_millis())
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), get_current_time_millis())
    log.info("registered %s v%s: %s", name, version, reason)
    return Registration(version, f"models:/{name}/{version}", run_id, promoted, reason)


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(float(v))


def _round(v):
    return round(float(v), 4) if _finite(v) else None
