"""The feature contract: the one place where logged columns are named and typed.

Everything that writes or reads the feature log (runtime, spool, ClickHouse DDL, training datasets, pandas/Arrow
dtypes) derives from the `Table` objects below. A column carries:

- ``ch_type``: its ClickHouse type (the DDL is generated from it),
- ``role``: what it is for. ``key`` identifies a row; ``feature`` is a scene signal a ranker may learn from;
  ``context`` is a temporal feature (what happened on the camera and in the room over the last seconds), computed by
  ``features.temporal.TemporalState`` from this and earlier ticks' logged columns, and a ranker input too;
  ``state`` encodes the program state (on-program flag, time since on program) and is logged but must NOT be fed
  to a scene ranker (a model would learn "stay where you are" from it); ``output`` is what the ranker/policy
  produced; ``meta`` is bookkeeping.
- ``since``: the schema version that added it. Migrations are additive and derived from this (see migrations.py).

Bump ``SCHEMA_VERSION`` when you add a column, give the column ``since=SCHEMA_VERSION`` and a default, and never
change or drop an existing column: old spool segments and old models must keep working.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

SCHEMA_VERSION = 7  # v2: the director core's exact inputs (session clock, pause position, policy config)
#                    v3: the ASR's word times (cuts never land inside a recognised word)
#                    v4: temporal context features (features/temporal.py)
#                    v5: the narration table (runtime/narration/), the A/B shadow arm's decisions
#                    v6: each decision's latency and whether its cut landed inside the outgoing speaker's word
#                    v7: the settled speaker and each camera's last utterance (features/temporal.py)

ROLES = ("key", "feature", "context", "state", "output", "meta")


class SchemaViolation(ValueError):
    """A row does not match the feature contract. The message names the table, the column and the problem."""


@dataclass(frozen=True)
class Column:
    name: str
    ch_type: str
    role: str
    doc: str
    since: int = 1
    default: Any = None  # value used when the writer omits an optional column; None + not nullable = required
    # the values a feature can take (inclusive; None = any finite number): what an external payload or an imported
    # row is checked against (ranker/core.py `CameraTick.from_features`)
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"column {self.name}: unknown role {self.role!r}")

    @cached_property
    def nullable(self) -> bool:
        return self.ch_type.startswith("Nullable(")

    @cached_property
    def base_type(self) -> str:
        t = self.ch_type
        for wrapper in ("Nullable(", "LowCardinality("):
            if t.startswith(wrapper):
                t = t[len(wrapper):-1]
        return t

    @cached_property
    def required(self) -> bool:
        return self.default is None and not self.nullable

    @cached_property
    def kind(self) -> str:
        """Python-level kind used by row validation: float, int, bool, str, time, map, array."""
        t = self.base_type
        if t.startswith("Float"):
            return "float"
        if t.startswith(("UInt", "Int")):
            return "int"
        if t == "Bool":
            return "bool"
        if t.startswith("DateTime64"):
            return "time"
        if t.startswith("Map("):
            return "map"
        if t.startswith("Array("):
            return "array"
        if t.startswith(("String", "Enum")):
            return "str"
        raise ValueError(f"column {self.name}: no row kind for ClickHouse type {self.ch_type}")

    @cached_property
    def pandas_dtype(self) -> str:
        k = self.kind
        if k == "float":
            return "float32" if self.base_type == "Float32" else "float64"
        if k == "int":
            t = self.base_type.lower()
            return t.capitalize() if self.nullable else t  # UInt16 -> pandas nullable "Uint16"
        if k == "bool":
            return "boolean" if self.nullable else "bool"
        if k == "time":
            return "datetime64[ms, UTC]"
        if k == "str":
            return "string"
        return "object"


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    time_column: str = "ts"
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(names) != len(set(names)):
            raise ValueError(f"table {self.name}: duplicate column names")
        self._by_name.update({c.name: c for c in self.columns})
        missing = [c for c in self.order_by if c not in self._by_name]
        if missing:
            raise ValueError(f"table {self.name}: ORDER BY names unknown columns {missing}")

    def __getitem__(self, name: str) -> Column:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def names(self, role: str) -> list[str]:
        return [c.name for c in self.columns if c.role == role]

    def columns_since(self, version: int) -> list[Column]:
        return [c for c in self.columns if c.since == version]

    def pandas_dtypes(self) -> dict[str, str]:
        return {c.name: c.pandas_dtype for c in self.columns}

    def ddl(self, database: str | None = None) -> str:
        """CREATE TABLE for the current schema version: MergeTree, partitioned by day, ordered by session/time."""
        qualified = f"{database}.{self.name}" if database else self.name
        cols = ",\n".join(f"    `{c.name}` {c.ch_type}{_default_clause(c)} COMMENT {_quote(c.doc)}" for c in self.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS {qualified}\n(\n{cols}\n)\n"
            f"ENGINE = MergeTree\n"
            f"PARTITION BY toDate({self.time_column})\n"
            f"ORDER BY ({', '.join(self.order_by)})\n"
            # Lets a retried insert with the same insert_deduplication_token (a spool segment id) be dropped by the
            # server: the spool's exactly-once guarantee rests on this, on a single server and on chDB alike.
            f"SETTINGS non_replicated_deduplication_window = 100000\n"
            f"COMMENT {_quote(self.doc)}"
        )

    def columns_at(self, version: int) -> list[str]:
        """Column names, in order, of this table as it was at schema `version`."""
        return [c.name for c in self.columns if c.since <= version]

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        """The row's values in column order, defaults filled in; SchemaViolation names the first problem."""
        unknown = [k for k in row if k not in self._by_name]
        if unknown:
            raise SchemaViolation(f"{self.name}: unknown column(s) {sorted(unknown)}")
        out: list[Any] = []
        for c in self.columns:
            v = row.get(c.name)
            if v is None:
                if c.nullable:
                    out.append(None)
                elif c.default is not None:  # a fresh container: rows never share a mutable default
                    out.append(type(c.default)(c.default) if isinstance(c.default, (list, dict)) else c.default)
                else:
                    raise SchemaViolation(f"{self.name}.{c.name}: required column is missing")
            else:
                out.append(_check_value(self.name, c, v))
        return out

    def validate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Return the row with defaults filled in, or raise SchemaViolation naming the first problem."""
        return dict(zip(self.column_names, self.values(row)))


def _check_value(table: str, c: Column, v: Any) -> Any:
    k = c.kind
    if k == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise SchemaViolation(f"{table}.{c.name}: expected a number, got {type(v).__name__} {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise SchemaViolation(f"{table}.{c.name}: non-finite value {v!r} (use None on a Nullable column)")
        return v
    if k == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise SchemaViolation(f"{table}.{c.name}: expected an integer, got {type(v).__name__} {v!r}")
        if c.base_type.startswith("UInt") and v < 0:
            raise SchemaViolation(f"{table}.{c.name}: negative value {v} for {c.ch_type}")
        return v
    if k == "bool":
        if not isinstance(v, bool):
            raise SchemaViolation(f"{table}.{c.name}: expected a bool, got {type(v).__name__} {v!r}")
        return v
    if k == "time":
        # Wall time as UNIX seconds (float). datetime objects are accepted and converted.
        if hasattr(v, "timestamp"):
            v = v.timestamp()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SchemaViolation(f"{table}.{c.name}: expected UNIX seconds or a datetime, got {v!r}")
        return round(float(v), 3)
    if k == "str":
        if not isinstance(v, str):
            raise SchemaViolation(f"{table}.{c.name}: expected a string, got {type(v).__name__} {v!r}")
        allowed = _enum_values(c.base_type)
        if allowed is not None and v not in allowed:
            raise SchemaViolation(f"{table}.{c.name}: {v!r} is not one of {sorted(allowed)}")
        return v
    if k == "map":
        if not isinstance(v, Mapping) or not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
            raise SchemaViolation(f"{table}.{c.name}: expected a str->str mapping, got {v!r}")
        return dict(v)
    if k == "array":
        if c.base_type.startswith("Array(Float"):
            if hasattr(v, "tolist"):
                v = v.tolist()  # a numpy array read back from ClickHouse
            if not isinstance(v, (list, tuple)) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise SchemaViolation(f"{table}.{c.name}: expected a list of finite numbers, got {v!r}")
            return [float(x) for x in v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise SchemaViolation(f"{table}.{c.name}: expected a list of strings, got {v!r}")
        return list(v)
    raise AssertionError(k)


def _enum_values(base_type: str) -> frozenset[str] | None:
    if not base_type.startswith("Enum"):
        return None
    inner = base_type[base_type.index("(") + 1:-1]
    return frozenset(part.split("=")[0].strip().strip("'") for part in inner.split(","))


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _default_clause(c: Column) -> str:
    if c.default is None:
        return ""
    if isinstance(c.default, bool):
        return f" DEFAULT {'true' if c.default else 'false'}"
    if isinstance(c.default, (int, float)):
        return f" DEFAULT {c.default}"
    if isinstance(c.default, str):
        return f" DEFAULT {_quote(c.default)}"
    if isinstance(c.default, (dict, list)) and not c.default:
        return ""  # the type's own empty value
    raise ValueError(f"column {c.name}: unsupported default {c.default!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Columns shared by every table: who/when.
def _session_columns() -> tuple[Column, ...]:
    return (
        Column("schema_version", "UInt16", "meta", "feature-contract version the row was written under",
               default=SCHEMA_VERSION),
        Column("session_id", "LowCardinality(String)", "key", "one directed show/recording"),
        Column("room", "LowCardinality(String)", "key", "LiveKit room or input set the session ran in", default=""),
        Column("synthetic", "Bool", "meta", "true for rows made by `aiobs simulate` (never real director labels)",
               default=False),
        Column("ts", "DateTime64(3, 'UTC')", "key", "wall-clock time of the tick (UNIX seconds on write)"),
        Column("tick", "UInt64", "key", "monotonic tick index within the session"),
        Column("t", "Float64", "meta", "session clock of the tick, seconds (the time the director core decides on)",
               since=2, default=0.0),
    )


UNIT, NON_NEGATIVE = (0.0, 1.0), (0.0, math.inf)  # feature bounds: a share or probability; a duration, rate or speed
# (audio_dbfs may pass 0 a little where decoded audio overshoots full scale; audio_rel_db is 0 on the loudest camera)


CAMERA_TICKS = Table(
    name="camera_ticks",
    doc="One row per camera per director tick: analysis features, program state and the ranker's score.",
    columns=_session_columns() + (
        Column("camera_id", "LowCardinality(String)", "key", "camera (LiveKit track / input file) id"),
        # people (detector + tracker)
        Column("people_count", "UInt16", "feature", "tracked people in frame", default=0),
        Column("largest_person_area", "Float32", "feature", "largest person box area / frame area",
               default=0.0, bounds=UNIT),
        Column("person_centrality", "Float32", "feature", "1 = largest person centred, 0 = at the edge",
               default=0.0, bounds=UNIT),
        Column("track_continuity", "Float32", "feature", "share of tracks also seen last tick (0..1)",
               default=0.0, bounds=UNIT),
        Column("track_age_s", "Float32", "feature", "age of the oldest live track, seconds",
               default=0.0, bounds=NON_NEGATIVE),
        Column("person_speed", "Float32", "feature", "mean tracked-person speed, frame widths/s",
               default=0.0, bounds=NON_NEGATIVE),
        # faces
        Column("face_count", "UInt16", "feature", "faces in frame", default=0),
        Column("largest_face_area", "Float32", "feature", "largest face area / frame area", default=0.0, bounds=UNIT),
        Column("face_centrality", "Float32", "feature", "1 = largest face centred", default=0.0, bounds=UNIT),
        # motion
        Column("motion_energy", "Float32", "feature", "frame-difference energy (0..1)", default=0.0, bounds=UNIT),
        Column("subject_motion", "Float32", "feature", "frame-difference energy inside the main subject's face "
               "(else person) box: a talking face moves, a listener's does not", since=2, default=0.0, bounds=UNIT),
        # audio / speech
        Column("audio_dbfs", "Float32", "feature", "RMS level of the camera's audio, dBFS",
               default=-120.0, bounds=(-math.inf, 20.0)),
        Column("audio_rel_db", "Float32", "feature", "dB below the loudest camera at this tick (0 = loudest)",
               default=0.0, bounds=(-math.inf, 0.01)),
        Column("speech_prob", "Float32", "feature", "VAD speech probability over the tick", default=0.0, bounds=UNIT),
        Column("keyword_hits", "UInt16", "feature", "configured keywords heard in the ASR window", default=0),
        Column("asr_words_per_s", "Float32", "feature", "recognised words per second in the ASR window",
               default=0.0, bounds=NON_NEGATIVE),
        # vision-language model (asynchronous; absent when no VLM runs)
        Column("vlm_interest", "Nullable(Float32)", "feature", "VLM interest rating 1-5; NULL without a VLM read",
               bounds=(1.0, 5.0)),
        Column("vlm_age_s", "Nullable(Float32)", "feature", "age of the VLM read, seconds; NULL without one",
               bounds=NON_NEGATIVE),
        # temporal context (features/temporal.py): computed by the director core from this and earlier ticks,
        # NULL on rows logged before schema v4
        Column("speech_run_s", "Nullable(Float32)", "context", "seconds this camera's current utterance has lasted "
               "(0 = not talking)", since=4),
        Column("since_spoke_s", "Nullable(Float32)", "context", "seconds since this camera's own speech was last "
               "heard (capped at the horizon, 30 s = not within it)", since=4),
        Column("since_anyone_spoke_s", "Nullable(Float32)", "context", "seconds since anyone's own speech was heard "
               "on any camera (a long silence), capped at 30 s", since=4),
        Column("since_keyword_s", "Nullable(Float32)", "context", "seconds since a keyword was heard on this "
               "camera, capped at 30 s", since=4),
        Column("since_keyword_any_s", "Nullable(Float32)", "context", "seconds since a keyword was heard on any "
               "camera, capped at 30 s", since=4),
        Column("speech_share_5s", "Nullable(Float32)", "context", "share of the last ~5 s this camera carried its "
               "own speech (exponential mean, 0..1)", since=4),
        Column("motion_mean_2s", "Nullable(Float32)", "context", "motion energy, exponential mean over ~2 s",
               since=4),
        Column("motion_trend", "Nullable(Float32)", "context", "motion rising (> 0) or falling: its ~1 s mean minus "
               "its ~5 s mean", since=4),
        Column("people_mean_2s", "Nullable(Float32)", "context", "people in frame, exponential mean over ~2 s",
               since=4),
        Column("floor_holder", "Nullable(Float32)", "context", "1 when this camera holds the conversation's floor "
               "(its speaker has the turn), else 0", since=4),
        Column("floor_s", "Nullable(Float32)", "context", "seconds this camera has held the floor (0 = it does "
               "not)", since=4),
        Column("last_utterance_s", "Nullable(Float32)", "context", "seconds this camera's latest utterance lasted "
               "(the current one while it talks; 0 = none heard), capped at 30 s; NULL on rows before v7", since=7),
        Column("settled_speaker", "Nullable(Float32)", "context", "1 when this camera is the settled speaker: the "
               "last one whose turn (pauses up to 1 s) lasted 3 s (features/temporal.py SETTLED_S), else 0", since=7),
        Column("settled_s", "Nullable(Float32)", "context", "seconds since this camera became the settled speaker "
               "(0 = it is not), capped at 30 s", since=7),
        # speech timing for the switching policy: with the features above, everything a decision depended on
        Column("speaking", "Bool", "meta", "speech on this camera at the tick (VAD, last ~100 ms)", default=False),
        Column("safe_cut_wait_s", "Float32", "meta", "seconds until the current word ends (0 = safe now)",
               default=0.0),
        Column("speech_mask", "UInt8", "meta", "voice activity across the last tick in 8 equal bins (bit 0 = oldest): "
               "the word boundaries the director core places cuts on", since=2, default=0),
        Column("quiet_at", "Nullable(Float64)", "meta", "session time inside a pause of this camera's audio during the "
               "last tick, where a cut may be placed; NULL = no pause", since=2),
        Column("asr_word_spans", "Array(Float64)", "meta", "words the ASR recognised on this camera's audio since the "
               "last tick, as session-time pairs start0, end0, start1, end1, ... (empty without ASR): the director "
               "core never places a cut inside one, even where the VAD heard a pause", since=3, default=[]),
        # program state (logged, never a scene-ranker input)
        Column("on_program", "Bool", "state", "camera is on program at this tick", default=False),
        Column("since_on_program_s", "Float32", "state", "seconds since the camera was last on program",
               default=0.0),
        # ranker output
        Column("score", "Nullable(Float32)", "output", "ranker score for this camera at this tick"),
        Column("model_version", "LowCardinality(String)", "output", "ranker that produced the score", default=""),
        Column("ab_variant", "LowCardinality(String)", "output", "A/B arm (champion, challenger, baseline)",
               default=""),
        # degradation
        Column("stale", "Bool", "meta", "no frames from this camera recently", default=False),
        Column("degraded", "Map(String, String)", "meta", "feature group -> reason it is missing/degraded",
               default={}),
    ),
    order_by=("session_id", "ts", "camera_id"),
)

# `degraded` reasons for an analysis stage that is switched off by configuration (not failing): written by the
# engine (runtime/analysis/engine.py) and by the simulator's sessions without that stage (ranker/simulate.py)
STAGE_OFF: dict[str, str] = {"asr": "ASR disabled", "vlm": "no VLM configured"}

DECISIONS = Table(
    name="decisions",
    doc="One row per director tick: what the policy did and why.",
    columns=_session_columns() + (
        Column("program_camera", "LowCardinality(String)", "output", "camera on program after this tick"),
        Column("cut", "Bool", "output", "a cut happened at this tick", default=False),
        Column("from_camera", "LowCardinality(String)", "output", "camera before the cut ('' if none)", default=""),
        Column("to_camera", "LowCardinality(String)", "output", "camera after the cut ('' if none)", default=""),
        Column("reason", "LowCardinality(String)", "output", "rule that decided (hold, delta, speech_wait, ...)"),
        Column("detail", "String", "output", "human-readable explanation: features that drove it", default=""),
        Column("transition", "LowCardinality(String)", "output", "cut | dissolve | ''", default=""),
        Column("policy_state", "String", "meta", "policy state snapshot as JSON", default=""),
        Column("cut_at", "Nullable(Float64)", "output", "session time of the cut when the policy placed it in a pause "
               "before the tick (NULL = at the tick)", since=2),
        Column("policy_config", "LowCardinality(String)", "meta", "the switching-policy configuration (JSON) the "
               "session ran under", since=2, default=""),
        Column("supervised", "Bool", "meta", "a human director was watching (program is an accepted label)",
               default=False),
        Column("model_version", "LowCardinality(String)", "output", "ranker that produced the scores", default=""),
        Column("ab_variant", "LowCardinality(String)", "output", "A/B arm", default=""),
        Column("latency_ms", "Nullable(Float32)", "meta", "from the tick's start (its analysis, where the front door "
               "measures it) to this decision", since=6),
        Column("cut_inside_speech", "Nullable(Bool)", "output", "the cut lands inside a word of the outgoing "
               "camera's own speech (the policy's speech wait timed out); NULL = no cut", since=6),
    ),
    order_by=("session_id", "ts"),
)

OVERRIDES = Table(
    name="overrides",
    doc="Manual override events from the human director: the labels of the learned ranker.",
    columns=_session_columns() + (
        Column("operator", "LowCardinality(String)", "meta", "who issued it", default=""),
        Column("action", "Enum8('take' = 1, 'lock' = 2, 'release' = 3)", "output",
               "take = cut now; lock = cut and hold until release/timeout; release = back to auto"),
        Column("camera_id", "LowCardinality(String)", "output", "camera taken/locked ('' for release)", default=""),
        Column("timeout_s", "Nullable(Float32)", "meta", "lock auto-resume timeout, seconds"),
    ),
    order_by=("session_id", "ts"),
)

NARRATION = Table(
    name="narration",
    doc="One row per narration line the narrator wrote: aired (when and by which voice) or why not. The text is "
        "what passed the safety filter; what the filter removed is counted by kind, never stored.",
    columns=_session_columns() + (
        Column("outcome", "LowCardinality(String)", "output", "aired | stale | refused | tts_failed | unwritten | "
               "replaced (a voiced line gave its slot to a more important or fresher event)"),
        Column("event", "LowCardinality(String)", "meta", "what the line is about: keyword | scene | operator | "
               "turn | cut"),
        Column("event_t", "Float64", "meta", "session time of the event"),
        Column("start_s", "Nullable(Float64)", "output", "session (program) time the line starts; NULL = not aired"),
        Column("end_s", "Nullable(Float64)", "output", "session time the line ends"),
        Column("text", "String", "output", "the line as spoken ('' when refused)", default=""),
        Column("provider", "LowCardinality(String)", "output", "the voice that spoke it (piper, elevenlabs)",
               default=""),
        Column("removed", "Map(String, String)", "meta", "kind of personal data / banned word -> how many the "
               "safety filter took out", default={}),
        Column("verified_pause", "Bool", "meta", "the whole pause was heard before the line was placed",
               default=False),
        Column("first_audio_ms", "Nullable(Float32)", "meta", "from the TTS request to its first audio"),
    ),
    order_by=("session_id", "ts"),
)

SHADOW_DECISIONS = Table(
    name="shadow_decisions",
    doc="A/B shadow mode: one row per tick of what the shadow arm (the model not acting) would have decided, "
        "through its own copy of the policy. Never acted on; compare with `decisions` (what aired).",
    columns=_session_columns() + (
        Column("program_camera", "LowCardinality(String)", "output", "the shadow's program after this tick"),
        Column("cut", "Bool", "output", "the shadow would have cut", default=False),
        Column("from_camera", "LowCardinality(String)", "output", "", default=""),
        Column("to_camera", "LowCardinality(String)", "output", "", default=""),
        Column("reason", "LowCardinality(String)", "output", "the rule that decided the shadow's tick"),
        Column("cut_at", "Nullable(Float64)", "output", "session time of the shadow's placed cut"),
        Column("acted_program", "LowCardinality(String)", "meta", "what was on program (the acting arm's)",
               default=""),
        Column("scores", "Map(String, String)", "output", "camera -> the shadow ranker's score", default={}),
        Column("model_version", "LowCardinality(String)", "meta", "the shadow ranker's version", default=""),
        Column("ab_variant", "LowCardinality(String)", "meta", "the shadow's arm", default=""),
        Column("acted_variant", "LowCardinality(String)", "meta", "the arm that acted", default=""),
    ),
    order_by=("session_id", "ts"),
)

TABLES: dict[str, Table] = {t.name: t for t in (CAMERA_TICKS, DECISIONS, OVERRIDES, NARRATION, SHADOW_DECISIONS)}


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise SchemaViolation(f"unknown table {name!r}; the feature contract has {sorted(TABLES)}") from None


def scene_feature_names(t: Table = CAMERA_TICKS) -> list[str]:
    """Columns a scene ranker may use as inputs (role == feature), in schema order."""
    return t.names("feature")


def context_feature_names(t: Table = CAMERA_TICKS) -> list[str]:
    """The temporal context features (role == context), in schema order."""
    return t.names("context")


def ranker_feature_names(t: Table = CAMERA_TICKS) -> list[str]:
    """Everything a ranker may learn from: the scene features, then the temporal context features."""
    return scene_feature_names(t) + context_feature_names(t)
