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

Every change of the `champion` alias is audited on the model versions involved (tag `audit`, a JSON list of
{action, who, when, why, from, to}, and for a person's promotion or rollback a line appended to the version's
description, so the MLflow model page shows it): the gate's own decision at registration (who "gate"), `promote()`
and `rollback()` (`aiobs model promote|rollback`). A version promoted (by hand or by the gate) records the champion
it replaced (tag `previous_champion`); `rollback()` undoes the move that made the current champion champion, found in
its audit trail, so repeated rollbacks walk the history back. The training run is renamed after the version it
produced (`aiobs-ranker-v3`; the version's `run_name` tag).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from features.extract import RANKER_FEATURES
from features.schema import SCHEMA_VERSION

from .base import RankerError
from .xgb import ATTR_POLICY

log = logging.getLogger(__name__)

MODEL_NAME = "aiobs-ranker"
EXPERIMENT = "aiobs-ranker"
CHAMPION, CHALLENGER = "champion", "challenger"
POLICY_TAG = "policy_config"  # model-version tag: the switching-policy configuration it was evaluated under
# model-version tag: "true" when the model carries a learned timing, "false" when its timing is the front door's (the
# tuning kept none: e.g. none of the candidates kept the real-media rule)
POLICY_LEARNED_TAG = "policy_learned"
AUDIT_TAG = "audit"  # model-version tag: JSON list of the champion changes this version took part in
PREVIOUS_CHAMPION_TAG = "previous_champion"  # model-version tag: the champion it replaced when it last became one
RUN_NAME_TAG = "run_name"  # model-version tag: the name of the training run (renamed after the version)
KEY_METRICS = ("cut_top1", "replay_frame_agreement", "real_speaker_follow")
_DESCRIPTION_MAX = 5000  # MLflow's model_versions.description column (String(5000))
_TAG_MAX = 100_000  # MLflow's limit on a model-version tag value
_AUDIT_LINE = "- audit "  # prefix of the audit lines appended to a version's description


@dataclass(frozen=True)
class Gate:
    margin: float = 0.02  # cut-point top-1 must beat the reference by this much (capped by the headroom, below)
    headroom_share: float = 0.5  # ... or by this share of the reference's headroom (1 - top-1), whichever is smaller
    max_agreement_drop: float = 0.0  # replay frame agreement may not fall below the reference's by more
    max_ping_pong_increase: int = 0
    max_cuts_in_speech_increase: int = 0  # replay cuts inside the outgoing camera's own speech
    max_follow_drop: float = 0.02  # real media: mean speaker follow may trail the baseline's / champion's by this
    max_session_follow_drop: float = 0.05  # ... and on any one session by this (a 40 s session moves 0.03 a late cut)
    max_mid_word_increase: int = 0  # real media: cuts inside words beyond the baseline's / champion's
    require_real: bool = True  # no promotion without a real-media evaluation

    def check_real(self, challenger: dict | None, references: dict[str, dict]) -> list[str]:
        """Problems of the candidate on the real-media set against each reference (baseline, champion)."""
        if challenger is None:
            return ["no real-media evaluation"] if self.require_real else []
        problems = []
        follow = challenger.get("real_speaker_follow", float("nan"))
        mine = _per_session(challenger)
        for name, ref in references.items():
            rf = ref.get("real_speaker_follow", float("nan"))
            if not np.isfinite(follow) or (np.isfinite(rf) and follow < rf - self.max_follow_drop):
                problems.append(f"real-media speaker follow {follow:.3f} < {name}'s {rf:.3f}")
            else:  # and on every session: one conversation it follows badly is not averaged away
                theirs = _per_session(ref)
                worse = [s for s, f in mine.items() if s in theirs and f < theirs[s] - self.max_session_follow_drop]
                if worse:
                    problems.append(f"real-media speaker follow on {', '.join(worse)} "
                                    f"{', '.join(f'{mine[s]:.3f}' for s in worse)} < {name}'s "
                                    f"{', '.join(f'{theirs[s]:.3f}' for s in worse)}")
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
            if new >= need:  # the required gain is 0 (no headroom, or none of it asked for): a tie is refused
                problems.append(f"cut_top1 {new:.4f} ties {reference_name}'s {ref:.4f}: a tie never replaces it (the "
                                f"required gain, {gain:.4f}, is the margin {self.margin:.3f} capped at "
                                f"{self.headroom_share:.2f} of the headroom above it)")
            else:
                problems.append(f"cut_top1 {new:.4f} < {reference_name} {ref:.4f} + required gain {gain:.4f} "
                                f"(margin {self.margin:.3f}, capped at {self.headroom_share:.2f} of the headroom)")
        if challenger["replay_frame_agreement"] < reference["replay_frame_agreement"] - self.max_agreement_drop:
            problems.append(f"replay agreement {challenger['replay_frame_agreement']:.3f} regresses from "
                            f"{reference_name}'s {reference['replay_frame_agreement']:.3f}")
        # quick returns (A -> B -> A) beyond both the reference's and the humans' own on the same sessions: a program
        # that returns as often as the people it learned from follows their conversation, it does not flicker
        allowed = max(reference["replay_ping_pong"], challenger.get("human_ping_pong", 0))
        if challenger["replay_ping_pong"] > allowed + self.max_ping_pong_increase:
            problems.append(f"ping-pong {challenger['replay_ping_pong']} > {reference_name}'s "
                            f"{reference['replay_ping_pong']}" + (f" and the humans' {challenger['human_ping_pong']}"
                                                                  if "human_ping_pong" in challenger else ""))
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

def server_problem(tracking_uri: str, timeout_s: float = 3.0) -> str | None:
    """For an MLflow tracking server (http/https): None when its /health answers 200 within `timeout_s`, else what is
    wrong in one line. Other stores (sqlite, files) are not servers: None."""
    import urllib.error
    import urllib.request

    uri = str(tracking_uri or "")
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as r:
            return None if r.status == 200 else f"MLflow server {store_label(uri)}/health answered {r.status}"
    except (urllib.error.URLError, OSError) as e:
        return f"MLflow server {store_label(uri)} unreachable: {getattr(e, 'reason', e)}"


_REACHED: dict[str, float] = {}  # tracking server -> when it last answered (checked again after a minute)


def client_for(tracking_uri: str):
    """An MlflowClient bound to `tracking_uri` for tracking *and* registry (never the process-global URIs). A tracking
    server that does not answer its health check is a RankerError at once (MLflow's own client would retry for
    minutes before saying so)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    if time.monotonic() - _REACHED.get(tracking_uri, -1e9) > 60.0:
        problem = server_problem(tracking_uri)
        if problem:
            raise RankerError(f"{problem}; start it, or point AIOBS_MLFLOW_TRACKING_URI at a reachable store")
        _REACHED[tracking_uri] = time.monotonic()
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


# -- registry reads, audit trail, promotion and rollback (aiobs model list|promote|rollback) -------------------------

def store_label(tracking_uri: str | None) -> str:
    """The store as error messages name it: the tracking URI, without any password in it."""
    uri = str(tracking_uri or "")
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def missing_store(tracking_uri: str | None) -> bool:
    """True for a local sqlite store whose file does not exist (nothing was ever registered there; opening it would
    create an empty one)."""
    uri = str(tracking_uri or "")
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return False
    return not Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser().exists()


def _not_found(what: str, tracking_uri: str | None) -> RankerError:
    return RankerError(f"{what} not found in {store_label(tracking_uri)}")


def _is_not_found(e: Exception) -> bool:
    code = getattr(e, "error_code", "")
    return code == "RESOURCE_DOES_NOT_EXIST" or ("not found" in str(e).lower()
                                                 and code in ("INVALID_PARAMETER_VALUE", "NOT_FOUND"))


@contextmanager
def registry_errors(tracking_uri: str | None, name: str = MODEL_NAME):
    """MLflow's errors as RankerError: a missing model/version/alias names what and the store searched; anything
    else (an unreachable server, a refused request) names the store and MLflow's first line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except RankerError:
        raise
    except MlflowException as e:
        if _is_not_found(e):
            raise _not_found(_what_is_missing(str(e), name), tracking_uri) from None
        raise RankerError(f"MLflow registry {store_label(tracking_uri)}: {str(e).splitlines()[0][:300]}") from e


def _what_is_missing(message: str, name: str) -> str:
    m = re.search(r"Model Version \(name=(.*?), version=(\w+)\) not found", message)
    if m:
        return f"version {m.group(2)} of registered model '{m.group(1)}'"
    m = re.search(r"alias (\S+?)\.? not found", message, re.IGNORECASE)
    if m:
        return f"alias '{m.group(1).strip(chr(39))}' of registered model '{name}'"
    m = re.search(r"Registered Model with name=(.*?) not found", message)
    return f"registered model '{m.group(1) if m else name}'"


def registry_client(tracking_uri: str, name: str = MODEL_NAME):
    """client_for(tracking_uri) for reading and changing registered versions; RankerError naming the store when it
    does not exist (a local sqlite file that is not there is not created) or does not hold model `name`."""
    if missing_store(tracking_uri):
        raise _not_found(f"registered model '{name}'", tracking_uri)
    client = client_for(tracking_uri)
    with registry_errors(tracking_uri, name):
        client.get_registered_model(name)
    return client


def model_version(client, tracking_uri: str, ref: str | int, name: str = MODEL_NAME):
    """The ModelVersion `ref` (a version number or an alias) of model `name`; RankerError naming what is missing and
    the store searched."""
    ref = str(ref).strip()
    with registry_errors(tracking_uri, name):
        try:
            return client.get_model_version(name, ref) if ref.isdigit() \
                else client.get_model_version_by_alias(name, ref)
        except Exception as e:  # noqa: BLE001 - diagnose which part is missing, in words
            if not _is_not_found(e):
                raise
            client.get_registered_model(name)  # raises (model not found) when the model itself is missing
            what = f"version {ref}" if ref.isdigit() else f"alias '{ref}'"
            raise _not_found(f"{what} of registered model '{name}'", tracking_uri) from None


def require_store(tracking_uri: str | None, uri: str) -> None:
    """RankerError (not found, naming the store) when the models:/ `uri` is to be read from a local sqlite store that
    does not exist; check before creating a client (MlflowClient creates a missing sqlite store)."""
    from mlflow.store.artifact.utils.models import _parse_model_uri

    if missing_store(tracking_uri):
        parsed = _parse_model_uri(uri)
        raise _not_found(f"logged model '{parsed.model_id}'" if parsed.model_id
                         else f"registered model '{parsed.name}'", tracking_uri)


def resolve_models_uri(client, tracking_uri: str | None, uri: str) -> tuple:
    """mlflow's get_model_name_and_version for a models:/ URI: (model_id,) or (name, version), with a missing model,
    version or alias reported as a RankerError that names the store searched."""
    from mlflow.store.artifact.utils.models import _parse_model_uri, get_model_name_and_version

    require_store(tracking_uri, uri)
    try:
        return get_model_name_and_version(client, uri)
    except Exception as e:  # noqa: BLE001 - only a missing entity is translated; the rest stays MLflow's
        if not _is_not_found(e):
            raise
        parsed = _parse_model_uri(uri)
        if parsed.model_id:
            raise _not_found(f"logged model '{parsed.model_id}'", tracking_uri) from None
        with registry_errors(tracking_uri, parsed.name):
            client.get_registered_model(parsed.name)
        what = (f"version {parsed.version}" if parsed.version else f"alias '{parsed.alias}'" if parsed.alias
                else f"stage '{parsed.stage}'" if parsed.stage else "any version")
        raise _not_found(f"{what} of registered model '{parsed.name}'", tracking_uri) from None


def champion_version(client, name: str = MODEL_NAME) -> str | None:
    """The version the `champion` alias points at, or None."""
    aliases = client.get_registered_model(name).aliases or {}
    v = aliases.get(CHAMPION)
    return str(v) if v is not None else None


def audit_trail(mv) -> list[dict]:
    """The audit entries recorded on a model version (oldest first); [] when none (or the tag is unreadable)."""
    try:
        entries = json.loads((mv.tags or {}).get(AUDIT_TAG) or "[]")
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def audit_entry(action: str, who: str, why: str, from_version: str | None, to_version: str | None,
                when: datetime | None = None, undoes: str | None = None) -> dict:
    """{id, action, who, when (UTC ISO 8601), why, from, to[, undoes]}: `from`/`to` are the champion versions before
    and after; a rollback to the previous champion names the entry it undoes (the move that made `from` champion)."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    entry = {"id": uuid.uuid4().hex[:12], "action": action, "who": who,
             "when": when.isoformat(timespec="seconds").replace("+00:00", "Z"), "why": " ".join(str(why).split()),
             "from": from_version, "to": to_version}
    return {**entry, "undoes": undoes} if undoes else entry


def _last_move_to(trail: list[dict], version: str) -> dict | None:
    """The move that made `version` champion and is still in force: the latest entry of its audit trail that moved
    the champion to it (a promotion, the gate's, a rollback --to), other than a rollback that undid a move, and not
    undone itself. Its `from` is what a rollback returns to, so repeated rollbacks walk the history back."""
    undone = {e.get("undoes") for e in trail if e.get("undoes")}
    return next((e for e in reversed(trail)
                 if str(e.get("to")) == version and e.get("from") != e.get("to") and not e.get("undoes")
                 and e.get("id") not in undone), None)


def audit_line(entry: dict) -> str:
    """One human-readable line for a version's description (Markdown list item)."""
    frm, to = entry.get("from"), entry.get("to")
    change = (f"champion v{frm} -> v{to}" if frm and frm != to else f"champion v{to}" if to else "no champion")
    if entry.get("action") == "gate" and frm == to:
        change = f"champion stays {'v' + str(to) if to else 'none'}"
    return f"{_AUDIT_LINE}{entry.get('when')} {entry.get('action')} by {entry.get('who')}: {change}: {entry.get('why')}"


def _with_audit(entries: list[dict], entry: dict) -> str:
    """The audit tag's value with `entry` appended, dropping the oldest entries if MLflow's tag limit requires."""
    entries = [*entries, entry]
    while len(entries) > 1 and len(json.dumps(entries)) > _TAG_MAX:
        entries = entries[1:]
    return json.dumps(entries)


def _with_audit_line(description: str | None, line: str) -> str:
    """`description` with an audit line appended (Markdown list under the original text), within MLflow's limit:
    the oldest audit lines go first (the tag keeps them), then the original text is shortened."""
    lines = (description or "").splitlines()
    audit = [ln for ln in lines if ln.startswith(_AUDIT_LINE)] + [line[:_DESCRIPTION_MAX // 2]]
    head = "\n".join(ln for ln in lines if not ln.startswith(_AUDIT_LINE)).strip()

    def render(head: str, audit: list[str]) -> str:
        return (head + "\n\n" if head else "") + "\n".join(audit)

    while len(audit) > 1 and len(render(head, audit)) > _DESCRIPTION_MAX:
        audit = audit[1:]
    if len(render(head, audit)) > _DESCRIPTION_MAX:
        head = head[:max(0, _DESCRIPTION_MAX - len(render("", audit)) - 3)].rstrip() + "…"
    return render(head, audit)


def record_audit(client, name: str, version: str, entry: dict, describe: bool = True) -> None:
    """Append `entry` to version's `audit` tag and (describe) its line to the version's description."""
    mv = client.get_model_version(name, version)
    client.set_model_version_tag(name, version, AUDIT_TAG, _with_audit(audit_trail(mv), entry))
    if describe:
        client.update_model_version(name, version, description=_with_audit_line(mv.description, audit_line(entry)))


def default_who() -> str:
    """Who runs this: $USER, else the login name of the process's user (a container's shell often sets no $USER)."""
    import getpass

    try:
        return os.environ.get("USER") or os.environ.get("USERNAME") or getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry
        return "unknown"


@dataclass
class VersionInfo:
    """One registered version as `aiobs model list` shows it."""
    version: str
    aliases: list[str]
    created: datetime | None
    promoted: bool | None  # the gate's decision at registration (None: no gate recorded)
    reason: str  # the gate's reason
    metrics: dict = field(default_factory=dict)
    policy: dict | None = None  # the policy timing (ranker.policy.TUNED_FIELDS of its policy_config)
    policy_learned: bool | None = None  # False: that timing is the front door's, the tuning kept none (None: unknown)
    run_name: str = ""
    audit: list[dict] = field(default_factory=list)
    previous_champion: str | None = None


def list_versions(tracking_uri: str, name: str = MODEL_NAME) -> list[VersionInfo]:
    """Every registered version of `name`, newest first, with its aliases, the gate's decision, key metrics and the
    learned policy timing."""
    from .policy import TUNED_FIELDS

    client = registry_client(tracking_uri, name)
    with registry_errors(tracking_uri, name):
        # (search_model_versions does not return aliases in MLflow 3: the registered model has them)
        by_version: dict[str, list[str]] = {}
        for alias, v in (client.get_registered_model(name).aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        versions = list(client.search_model_versions(f"name = '{name}'"))
    out = []
    for mv in sorted(versions, key=lambda m: int(m.version), reverse=True):
        tags = mv.tags or {}
        gate = tags.get("gate", "")
        try:
            metrics = json.loads(tags.get("metrics") or "{}")
        except ValueError:
            metrics = {}
        try:
            policy_config = json.loads(tags[POLICY_TAG]) if tags.get(POLICY_TAG) else None
        except ValueError:
            policy_config = None
        order = {CHAMPION: 0, CHALLENGER: 1}
        out.append(VersionInfo(
            version=str(mv.version),
            aliases=sorted(by_version.get(str(mv.version), []), key=lambda a: (order.get(a, 2), a)),
            created=(datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)
                     if mv.creation_timestamp else None),
            promoted=gate.startswith("promoted") if gate else None,
            reason=gate,
            metrics={k: metrics[k] for k in KEY_METRICS if metrics.get(k) is not None},
            policy=({k: policy_config[k] for k in TUNED_FIELDS if k in policy_config}
                    if isinstance(policy_config, dict) else None),
            policy_learned={"true": True, "false": False}.get(tags.get(POLICY_LEARNED_TAG, "")),
            run_name=tags.get(RUN_NAME_TAG, ""),
            audit=audit_trail(mv),
            previous_champion=tags.get(PREVIOUS_CHAMPION_TAG) or None))
    return out


@dataclass
class ChampionChange:
    name: str
    from_version: str | None
    to_version: str
    entry: dict


def _move_champion(client, tracking_uri: str, name: str, to: str, entry: dict, previous: str | None,
                   set_previous: bool) -> ChampionChange:
    with registry_errors(tracking_uri, name):
        if set_previous:
            if previous:
                client.set_model_version_tag(name, to, PREVIOUS_CHAMPION_TAG, previous)
            elif PREVIOUS_CHAMPION_TAG in (client.get_model_version(name, to).tags or {}):
                client.delete_model_version_tag(name, to, PREVIOUS_CHAMPION_TAG)
        client.set_registered_model_alias(name, CHAMPION, to)
        record_audit(client, name, to, entry)
        if previous and previous != to:
            try:
                record_audit(client, name, previous, entry)
            except Exception as e:  # noqa: BLE001 - the move is done; the old champion's record is a courtesy
                log.warning("%s v%s: the audit entry on the previous champion failed: %s", name, previous, e)
    log.info("%s: champion v%s -> v%s (%s by %s: %s)", name, previous, to, entry["action"], entry["who"], entry["why"])
    return ChampionChange(name, previous, to, entry)


def _reason(reason: str) -> str:
    reason = " ".join(str(reason or "").split())
    if not reason:
        raise ValueError("a reason is required (--reason TEXT): it is recorded on the model versions")
    return reason


def promote(tracking_uri: str, version: str | int, reason: str, who: str | None = None,
            name: str = MODEL_NAME) -> ChampionChange:
    """Move `champion` to `version` (a number or an alias) by hand, audited on it and on the champion it replaces
    (which it records as its `previous_champion`)."""
    reason = _reason(reason)
    client = registry_client(tracking_uri, name)
    to = str(model_version(client, tracking_uri, version, name).version)
    with registry_errors(tracking_uri, name):
        previous = champion_version(client, name)
    if previous == to:
        raise RankerError(f"version {to} of registered model '{name}' is already the champion "
                          f"({store_label(tracking_uri)}): nothing to promote")
    entry = audit_entry("promote", who or default_who(), reason, previous, to)
    return _move_champion(client, tracking_uri, name, to, entry, previous, set_previous=True)


def rollback(tracking_uri: str, reason: str, to: str | int | None = None, who: str | None = None,
             name: str = MODEL_NAME) -> ChampionChange:
    """Undo the move that made the current champion champion (a promotion by hand or by the gate, or a rollback
    --to), returning `champion` to the version it replaced; repeated rollbacks walk the history back (promote v3 over
    v2, promote v2 over v3: rollback -> v3, rollback -> v2, rollback -> v2's own predecessor). The move comes from
    the champion's audit trail (for a version registered before there was one, its `previous_champion` tag).
    With `to`, the champion moves to that version instead (a move a later rollback undoes). Audited like promote."""
    reason = _reason(reason)
    client = registry_client(tracking_uri, name)
    with registry_errors(tracking_uri, name):
        current = champion_version(client, name)
    undoes = None
    if to is not None:
        target = str(model_version(client, tracking_uri, to, name).version)
    else:
        if current is None:
            raise RankerError(f"registered model '{name}' has no champion in {store_label(tracking_uri)}: nothing "
                              "to roll back (aiobs model promote VERSION sets one)")
        mv = model_version(client, tracking_uri, current, name)
        trail = audit_trail(mv)
        move = _last_move_to(trail, current)
        if move is not None:
            target, undoes = (str(move["from"]) if move.get("from") else None), move.get("id")
        else:  # no audit trail: a version registered before there was one
            target = (mv.tags or {}).get(PREVIOUS_CHAMPION_TAG) or None
        if not target:
            raise RankerError(f"nothing to roll back to: champion v{current} of registered model '{name}' replaced "
                              f"no earlier champion (its audit trail and {PREVIOUS_CHAMPION_TAG} tag name none) in "
                              f"{store_label(tracking_uri)}; name a version with --to")
        try:
            target = str(model_version(client, tracking_uri, target, name).version)
        except RankerError as e:
            raise RankerError(f"cannot roll back champion v{current} to the champion it replaced, v{target}: {e}") \
                from None
    if target == current:
        raise RankerError(f"version {target} of registered model '{name}' is already the champion "
                          f"({store_label(tracking_uri)}): nothing to roll back")
    entry = audit_entry("rollback", who or default_who(), reason, current, target, undoes=undoes)
    return _move_champion(client, tracking_uri, name, target, entry, current, set_previous=False)


def git_revision(root: str | Path | None = None) -> str:
    """The git commit checked out at `root` (default: this code's checkout), with "-dirty" when tracked files have
    uncommitted changes; "" when it is not a git checkout or git is unavailable. Never raises."""
    try:
        cwd = Path(root) if root is not None else Path(__file__).resolve().parent.parent
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
        rev = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, env=env)
        if rev.returncode != 0 or not rev.stdout.strip():
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, env=env)
        return rev.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except Exception:  # noqa: BLE001 - a nicety for run tags: never fail a training over it
        return ""


def register(booster, *, tracking_uri: str, artifacts_dir: str | None, metrics: dict, reference: dict,
             reference_name: str, params: dict, plots: dict[str, str] | None = None, gate: Gate | None = None,
             data_info: dict | None = None, policy_config: dict | None = None,
             champion_error: str | None = None, name: str = MODEL_NAME,
             real: dict[str, dict] | None = None, run_tags: dict | None = None) -> Registration:
    """Log the booster with signature + contract + metrics, register it, alias it challenger, maybe champion.

    `policy_config` (the switching-policy configuration the model was evaluated under, a flat JSON-able dict) is
    logged as run params `policy.<key>` and recorded on the model version as tag `policy_config` (JSON).
    `champion_error` (why an existing champion could not be evaluated) blocks promotion: the version is aliased
    `challenger` only, and the reason is its `gate` tag, its description and the run's `gate` / `champion_error` tags.
    The gate's decision is the version's first audit entry (who "gate"); a promotion records the champion it replaced
    (tag `previous_champion`, and an audit entry on that version too) so `rollback()` can return to it.
    `run_tags` (e.g. the Optuna study, the Dagster run id, `git_revision()`) are added to the training run's tags; the
    run is renamed after the version (`aiobs-ranker-v3`, also the version's `run_name` tag).
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
    run = start_run(client, exp_id, "ranker-train", get_current_time_millis(),
                    tags={str(k): str(v) for k, v in (run_tags or {}).items() if v is not None})
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
        previous = champion_version(client, name)  # the champion this version may replace
        # source = the model's artifact location (a `models:/<model_id>` source would make MLflow's sqlalchemy
        # registry resolve it through the *global* tracking URI)
        real_learned = {k: v for k, v in ((real or {}).get("learned") or {}).items()
                        if k.startswith("real_") and k not in metrics and _finite(v)}
        tags = {"feature_schema_version": str(SCHEMA_VERSION), "features": json.dumps(list(RANKER_FEATURES)),
                "gate": reason, "metrics": json.dumps({k: _round(v) for k, v in {**metrics, **real_learned}.items()}),
                **({POLICY_TAG: policy_json} if policy_json is not None else {}),
                POLICY_LEARNED_TAG: str(bool(booster.attr(ATTR_POLICY))).lower(),
                **({"champion_error": champion_error[:5000]} if champion_error else {})}
        mv = client.create_model_version(name, source=model.artifact_location, run_id=run_id, tags=tags,
                                         description=reason, model_id=model.model_id)
        version = str(mv.version)
        entry = audit_entry("gate", "gate", reason, previous, version if promoted else previous)
        run_name = f"{name}-v{version}"
        client.update_run(run_id, name=run_name)  # (sets the run's mlflow.runName tag too)
        client.set_model_version_tag(name, version, RUN_NAME_TAG, run_name)
        client.set_model_version_tag(name, version, AUDIT_TAG, json.dumps([entry]))
        if promoted and previous and previous != version:
            client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": version}])})
        client.set_registered_model_alias(name, CHALLENGER, version)
        if promoted:
            client.set_registered_model_alias(name, CHAMPION, version)
            if previous and previous != version:
                try:
                    record_audit(client, name, previous, entry)
                except Exception as e:  # noqa: BLE001 - the promotion stands; the old champion's record is a courtesy
                    log.warning("%s v%s: the audit entry on the replaced champion failed: %s", name, previous, e)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED), get_current_time_millis())
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), get_current_time_millis())
    log.info("registered %s v%s: %s", name, version, reason)
    return Registration(version, f"models:/{name}/{version}", run_id, promoted, reason)


def _per_session(real: dict) -> dict[str, float]:
    """Session -> speaker follow from a real-media evaluation (`ranker.evaluate.evaluate_real`'s figures)."""
    per = real.get("per_session") or real.get("real_per_session") or {}
    return {s: float(m["speaker_follow"]) for s, m in per.items() if m.get("speaker_follow") is not None}


def _finite(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(float(v))


def _round(v):
    return round(float(v), 4) if _finite(v) else None
