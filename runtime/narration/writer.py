"""What there is to say: events read off one director tick, and the line written for each.

Events, most important first: a keyword someone said (ASR), a new scene read of the program camera (the VLM), a
cut the director or an operator made (its rule). Lines come from templates per event type (settings
`narration_templates` replace the built-in ones); an optional writer hook (`narration_writer`, "module:function",
e.g. an LLM) is asked first and its line goes through the same safety filter. Every field a template fills comes
from the tick; the VLM's and the ASR's words are untrusted text, and the safety filter judges the whole line.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

KNOWN_FIELDS: dict[str, set[str]] = {"turn": {"to", "from", "reason"}, "cut": {"to", "from", "reason"},
                                     "operator": {"to", "from", "reason"}, "scene": {"camera", "activity", "scene"},
                                     "keyword": {"speaker", "keyword"}}
PRIORITY = {"keyword": 3, "scene": 2, "operator": 1, "turn": 1, "cut": 0}

DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "turn": ["Over to {to}.", "{to} now.", "Here is {to}."],
    "cut": ["On {to}.", "A look at {to}."],
    "operator": ["The operator takes {to}."],
    "scene": ["On {camera}, {activity}.", "{camera}: {scene}."],
    "keyword": ["{speaker} mentions {keyword}.", "{keyword}, says {speaker}."],
}


@dataclass
class Event:
    t: float  # session time it happened
    kind: str  # keyword | scene | operator | turn | cut
    fields: dict[str, str] = field(default_factory=dict)
    untrusted: tuple[str, ...] = ()  # fields from a model's words (VLM, ASR): filtered on their own before use

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.kind, 0)


class EventReader:
    """Reads the events of each tick: (t, observations, TickResult) -> [Event]. Remembers what it already told."""

    def __init__(self, names: dict[str, str], keywords=()):
        self.names = dict(names)
        self.keywords = [k.lower() for k in keywords if k]
        self._vlm_seen: dict[str, float] = {}
        self._last_scene = ""

    def name(self, cam: str) -> str:
        return self.names.get(cam, cam)

    def read(self, t: float, observations, result) -> list[Event]:
        out: list[Event] = []
        d = result.decision
        if d.cut and d.from_camera:
            kind = ("operator" if d.reason.startswith("override") else "turn" if d.reason == "turn" else "cut")
            out.append(Event(d.cut_time, kind, {"to": self.name(d.to_camera), "from": self.name(d.from_camera),
                                                "reason": d.reason.replace("_", " ")}))
        program = d.program
        for o in observations:
            if o.stale:
                continue
            if o.vlm is not None and o.vlm.t > self._vlm_seen.get(o.camera_id, -1e9):
                self._vlm_seen[o.camera_id] = o.vlm.t
                text = (o.vlm.activity or o.vlm.scene).strip().rstrip(".")
                if o.camera_id == program and text and text != self._last_scene:
                    self._last_scene = text
                    out.append(Event(o.vlm.t, "scene", {"camera": self.name(o.camera_id),
                                                        "activity": (o.vlm.activity or text).strip(),
                                                        "scene": (o.vlm.scene or text).strip()},
                                     untrusted=("activity", "scene")))
            if o.keyword_hits and o.new_words and self.keywords:
                said = " " + " ".join(re.sub(r"[^\w']", "", w.text.lower()) for w in o.new_words) + " "
                for k in self.keywords:
                    if f" {k} " in said:
                        w_t = next((w.start for w in o.new_words if k in w.text.lower()), t)
                        out.append(Event(w_t, "keyword", {"speaker": self.name(o.camera_id), "keyword": k}))
                        break
        return out


def sentence_case(text: str) -> str:
    """Filtered untrusted text goes mid-sentence: lower-case its first letter unless it is an acronym."""
    text = " ".join(str(text).split()).rstrip(".")
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        return text[0].lower() + text[1:]
    return text


class LineWriter:
    """event -> text (or None). The hook first when configured; the event type's templates, in turn, otherwise."""

    def __init__(self, templates: dict[str, list[str]] | None = None, hook: str = ""):
        self.templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        self.hook = load_hook(hook) if hook else None
        self._turn: dict[str, int] = {}

    def write(self, event: Event) -> str | None:
        if self.hook is not None:
            try:
                text = self.hook(event.kind, dict(event.fields))
                if text:
                    return str(text)
            except Exception as e:  # noqa: BLE001 - a failing writer falls back to the templates
                log.warning("narration: the writer hook failed (%s: %s); using the templates", type(e).__name__, e)
        options = self.templates.get(event.kind) or []
        for i in range(len(options)):
            k = self._turn.get(event.kind, 0)
            self._turn[event.kind] = k + 1
            try:
                return options[(k + i) % len(options)].format_map(event.fields)
            except (KeyError, IndexError, ValueError):
                continue  # a template that asks for a field this event does not have
        return None


def check_templates(templates: dict[str, list[str]]) -> None:
    """ValueError naming the first template with an unknown event type or field (a typo would never speak)."""
    import string

    for kind, options in templates.items():
        if kind not in KNOWN_FIELDS:
            raise ValueError(f"narration template event type {kind!r} is unknown (known: {sorted(KNOWN_FIELDS)})")
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            raise ValueError(f"narration templates for {kind!r} must be a non-empty list of strings")
        for o in options:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(o) if f is not None}
            except ValueError as e:
                raise ValueError(f"narration template {o!r}: {e}") from None
            bad = names - KNOWN_FIELDS[kind]
            if bad:
                raise ValueError(f"narration template {o!r} for {kind!r} uses unknown field(s) {sorted(bad)} "
                                 f"(known: {sorted(KNOWN_FIELDS[kind])})")


def load_hook(spec: str):
    """'package.module:function' -> the function, called as fn(kind, fields) -> str | None."""
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"narration_writer must be 'module:function', not {spec!r}")
    try:
        hook = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"narration_writer {spec!r} cannot be loaded: {e}") from None
    if not callable(hook):
        raise ValueError(f"narration_writer {spec!r} is not a function")
    return hook
