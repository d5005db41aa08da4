"""The narrator: one tick at a time, events -> a line -> the safety filter -> a voice -> a place in the program.

Every front door calls `Narrator.tick(t, observations, result)` after the director core's tick, with the same
observations the core saw. Scheduling rules, in one place:
- at most one line per `interval_s` (start to start); one line waits at a time, the most important and newest event
  wins the slot; a line not aired within `max_age_s` of its event is dropped (stale);
- never over speech: the line goes into a pause of the room's speech (voice activity of every camera on air, so
  the program's sound whichever camera it follows), `margin_s` clear of speech on both sides. Where the program
  runs behind the analysis (files: the renderer follows the decisions; live: a broadcast delay), the narrator sees
  the whole pause before it places the line in it, up to `lookback_s` back in time, so a line never overlaps
  speech. With no lookback (live, no delay) it starts a line after `min_pause_s` of silence and the program sound
  ducks under it (`runtime/narration/mix.py`);
- the program sound ducks while a line plays.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .safety import SafetyFilter
from .writer import Event, EventReader, LineWriter, sentence_case

LEVEL_DBFS = -23.0  # every voice is brought to this loudness (RMS of its voiced part), peaks at most PEAK
PEAK = 0.7

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    start: float  # program (session) time the line starts
    text: str
    samples: np.ndarray = field(repr=False)  # mono float32 at `rate`
    rate: int
    provider: str
    event: str
    event_t: float
    removed: dict[str, int] = field(default_factory=dict)
    first_audio_s: float = 0.0
    verified: bool = True  # the whole pause was seen before the line was placed (False: started speculatively)

    @property
    def end(self) -> float:
        return self.start + self.samples.size / self.rate

    def as_row(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "provider": self.provider, "event": self.event, "event_t": round(self.event_t, 3),
                "removed": self.removed, "first_audio_ms": round(self.first_audio_s * 1000, 1),
                "verified_pause": self.verified}


@dataclass
class NarrationConfig:
    interval_s: float = 15.0
    max_age_s: float = 8.0
    margin_s: float = 0.2
    min_pause_s: float = 0.5
    duck_db: float = -14.0
    lookback_s: float = 0.0  # how far back in time a line may still be placed (the program runs this far behind)
    lead_s: float = 2.0  # a line about a cut may start this long before the cut (in the pause before it)

    @classmethod
    def from_settings(cls, s, lookback_s: float) -> "NarrationConfig":
        return cls(s.narration_interval_s, s.narration_max_age_s, s.narration_margin_s, s.narration_min_pause_s,
                   s.narration_duck_db, lookback_s)


class SpeechGate:
    """The room's recent speech: voice-activity bins (speech_mask, 8 per tick) of every camera on air, merged into
    intervals, so a line can be placed into a pause it has heard whole."""

    def __init__(self, tick_s: float, keep_s: float = 30.0):
        self.tick_s = tick_s
        self.keep_s = keep_s
        self.speech: list[list[float]] = []  # merged [start, end] intervals of speech, oldest first
        self.now = -1e9
        self.speaking = False

    @property
    def last_speech_end(self) -> float:
        return self.speech[-1][1] if self.speech else -1e9

    def update(self, t: float, observations) -> None:
        bins, w = 8, self.tick_s / 8
        mask, self.speaking = 0, False
        for o in observations:
            if o.stale:
                continue
            mask |= int(o.speech_mask)
            self.speaking |= bool(o.speaking)
        t0 = t - self.tick_s
        for b in range(bins):
            if mask >> b & 1:
                self._add(t0 + b * w, t0 + (b + 1) * w)
        if self.speaking:
            self._add(t - w, t)
        self.speaking |= bool(mask >> (bins - 2))  # speech in the tick's last 2 bins (~50 ms at 5 Hz)
        self.now = t
        while self.speech and self.speech[0][1] < t - self.keep_s:
            self.speech.pop(0)

    def _add(self, a: float, b: float) -> None:
        if self.speech and a <= self.speech[-1][1] + 1e-6:
            self.speech[-1][1] = max(self.speech[-1][1], b)
        else:
            self.speech.append([a, b])

    def place(self, lo: float, d: float, margin: float) -> float | None:
        """The earliest start >= lo of a line of `d` s with `margin` s of silence on both sides inside a pause heard
        whole (up to now); None when no pause heard so far holds it."""
        edges = [-1e9] + [x for iv in self.speech for x in iv] + [self.now]
        for g0, g1 in zip(edges[0::2], edges[1::2]):  # the pauses: before, between and after the speech intervals
            start = max(lo, g0 + margin)
            if start + d + margin <= g1 + 1e-9:
                return start
        return None


def _level(x: np.ndarray) -> np.ndarray:
    """Bring a line to LEVEL_DBFS (RMS over its voiced samples), its peaks at most PEAK: voices differ by 10 dB."""
    voiced = x[np.abs(x) > 1e-3]
    if voiced.size == 0:
        return x.astype(np.float32)
    rms = float(np.sqrt(np.mean(voiced.astype(np.float64) ** 2)))
    gain = min(10 ** (LEVEL_DBFS / 20) / max(rms, 1e-9), PEAK / float(np.abs(x).max()))
    return (x * gain).astype(np.float32)


@dataclass
class _Pending:
    event: Event
    future: Future | None = None
    text: str = ""
    removed: dict[str, int] = field(default_factory=dict)


def narration_outcomes(stats: dict) -> str:
    """'8 events: 2 aired, 4 stale (no pause long enough in time), 2 refused (safety filter)'."""
    why = {"lines": "aired", "stale": "stale (no pause long enough in time)", "refused": "refused (safety filter)",
           "tts_failed": "no voice (every TTS provider failed)", "unwritten": "unwritten (no template fits)",
           "replaced": "replaced by a later event", "superseded": "superseded", "skipped": "skipped (slot taken)"}
    parts = [f"{stats[k]} {v}" for k, v in why.items() if stats.get(k)]
    return f"{stats.get('events', 0)} events" + (": " + ", ".join(parts) if parts else "")


class Narrator:
    """`tick()` -> the Utterance placed at this tick, if any; `lines` holds every one placed so far."""

    def __init__(self, config: NarrationConfig, tts, *, names: dict[str, str], keywords=(), tick_s: float,
                 safety: SafetyFilter | None = None, writer: LineWriter | None = None, synchronous: bool = True):
        self.config = config
        self.tts = tts
        self.reader = EventReader(names, keywords)
        self.writer = writer or LineWriter()
        self.safety = safety or SafetyFilter(allow_names=list(names.values()) + list(keywords))
        self.gate = SpeechGate(tick_s, keep_s=config.lookback_s + config.lead_s + config.max_age_s + 1.0)
        self.synchronous = synchronous
        self._pool = None if synchronous else ThreadPoolExecutor(1, thread_name_prefix="narration-tts")
        self.pending: _Pending | None = None
        self.lines: list[Utterance] = []
        self.stats: Counter[str] = Counter()  # events, lines, refused, stale, tts_failed, rate_limited
        self.removed: Counter[str] = Counter()  # what the safety filter took out, by kind, over the session
        self._tick_key: dict = {"ts": 0.0, "tick": 0, "t": 0.0}
        self.sink = None  # the feature log (`narration` table), once bound to a session
        self._key: dict = {}

    def bind(self, sink, session_id: str, room: str = "", synthetic: bool = False) -> None:
        """Log every line's outcome to the feature log's `narration` table of this session."""
        self.sink = sink
        self._key = {"session_id": session_id, "room": room, "synthetic": synthetic}

    @classmethod
    def from_settings(cls, settings, tts, *, names: dict[str, str], lookback_s: float, tick_s: float,
                      synchronous: bool = True) -> "Narrator":
        s = settings
        safety = SafetyFilter(allow_names=list(names.values()) + list(s.keywords) + list(s.narration_allow_names),
                              banned_words=s.narration_banned_words, banned_action=s.narration_banned_action)
        return cls(NarrationConfig.from_settings(s, lookback_s), tts, names=names, keywords=s.keywords,
                   tick_s=tick_s, safety=safety, writer=LineWriter(s.narration_templates, s.narration_writer),
                   synchronous=synchronous)

    def add_camera(self, cam: str, name: str | None = None) -> None:
        """A camera that joined later (live): its name may be said."""
        self.reader.names.setdefault(cam, name or cam)
        self.safety.allow_name(self.reader.names[cam])

    # -- one tick ----------------------------------------------------------------------------------------------------
    def tick(self, t: float, observations, result, ts: float | None = None) -> Utterance | None:
        """`ts`: the tick's wall-clock time, for the log rows (default now)."""
        self._tick_key = {"ts": time.time() if ts is None else ts, "tick": int(getattr(result, "k", 0)), "t": t}
        self.gate.update(t, observations)
        for ev in self.reader.read(t, observations, result):
            self.stats["events"] += 1
            self._offer(ev)
        if self.pending is None:
            return None
        p, cfg = self.pending, self.config
        if t - cfg.lookback_s - p.event.t > cfg.max_age_s:  # even placed as far back as it may go, it is too late
            self._drop("stale")
            return None
        if p.future is None:
            if t < self._next_allowed() - cfg.lookback_s:
                return None  # not yet its turn: a fresher event may still take the slot
            if not self._write(p):
                return None
        if not p.future.done():
            return None
        try:
            speech = p.future.result()
        except Exception as e:  # noqa: BLE001 - every provider failed: this line is lost, the next may not be
            log.warning("narration: no voice for a %s line (%s)", p.event.kind, e)
            self._drop("tts_failed")
            return None
        return self._place(t, p, speech)

    def _offer(self, ev: Event) -> None:
        p = self.pending
        if p is not None and p.future is not None:
            # a line already voiced keeps the slot, unless the new event matters more, or it has waited half its
            # life for a pause (then the newer event of the same kind is the better line)
            if ev.priority > p.event.priority or (ev.priority == p.event.priority
                                                  and ev.t - p.event.t > self.config.max_age_s / 2):
                self._drop("replaced")
                self.pending = _Pending(ev)
            else:
                self.stats["skipped"] += 1  # (no line was written for it: no log row)
            return
        if p is None or ev.priority >= p.event.priority:
            if p is not None:
                self.stats["superseded"] += 1  # an event not yet written: no line, no log row
            self.pending = _Pending(ev)
        else:
            self.stats["skipped"] += 1

    def _write(self, p: _Pending) -> bool:
        fields, removed = dict(p.event.fields), Counter()
        seen = set()
        for k in p.event.untrusted:  # a model's words are filtered on their own first (a name opening them counts)
            v = self.safety.check(fields.get(k, ""))
            if fields.get(k, "") not in seen:  # the same words in two fields count once
                removed.update(v.removed)
                seen.add(fields.get(k, ""))
            if v.ok:
                fields[k] = sentence_case(v.text)
            else:
                fields.pop(k, None)  # templates that need it are skipped
        text = self.writer.write(Event(p.event.t, p.event.kind, fields))
        if not text:
            self._drop("unwritten")
            return False
        verdict = self.safety.check(text)
        verdict.removed = dict(Counter(verdict.removed) + removed)
        if verdict.removed:
            self.removed.update(verdict.removed)
            log.info("narration: the safety filter removed %s from a %s line%s", dict(verdict.removed),
                     p.event.kind, " and refused it" if verdict.refused else "")
        if not verdict.ok:
            log.info("narration: a %s line was refused (%s)", p.event.kind, verdict.reason)
            p.removed = verdict.removed
            self._drop("refused")
            return False
        p.text, p.removed = verdict.text, verdict.removed
        if self.synchronous:
            p.future = Future()
            try:
                p.future.set_result(self.tts.speak(p.text))
            except Exception as e:  # noqa: BLE001 - handed on through the future like the threaded path
                p.future.set_exception(e)
        else:
            p.future = self._pool.submit(self.tts.speak, p.text)
        return True

    def _next_allowed(self) -> float:
        return self.lines[-1].start + self.config.interval_s if self.lines else -1e9

    def _place(self, t: float, p: _Pending, speech) -> Utterance | None:
        cfg, gate = self.config, self.gate
        d = speech.samples.size / speech.rate
        after_prev = self.lines[-1].end + cfg.margin_s if self.lines else -1e9
        # a line about a cut may lead it, in the pause before it ("Over to ..." as the new speaker draws breath)
        lead = cfg.lead_s if p.event.kind in ("turn", "cut", "operator") else 0.0
        lo = max(0.0, t - cfg.lookback_s, after_prev, p.event.t - lead, self._next_allowed())
        start = gate.place(lo, d, cfg.margin_s)
        verified = start is not None
        if start is None:
            if cfg.lookback_s >= d + 2 * cfg.margin_s:
                return None  # a pause long enough may still come: wait for it
            # the program cannot wait for the whole pause (live): start once the pause is long enough, ducked
            if gate.speaking or t - gate.last_speech_end < cfg.min_pause_s:
                return None
            start = max(lo, t)
        if start - p.event.t > cfg.max_age_s:
            self._drop("stale")
            return None
        u = Utterance(start, p.text, _level(speech.samples), speech.rate, speech.provider, p.event.kind, p.event.t,
                      dict(p.removed), speech.first_audio_s, verified)
        self.lines.append(u)
        self.pending = None
        self.stats["lines"] += 1
        self._log(p, "aired", u)
        log.info("narration: %.2f-%.2f s %r (%s, %s)", u.start, u.end, u.text, u.provider, u.event)
        return u

    def _drop(self, why: str) -> None:
        self.stats[why] += 1
        if self.pending is not None:
            self._log(self.pending, why)
        self.pending = None

    def _log(self, p: _Pending, outcome: str, u: Utterance | None = None) -> None:
        if self.sink is None:
            return
        self.sink.append("narration", {
            **self._key, **self._tick_key, "outcome": outcome, "event": p.event.kind, "event_t": p.event.t,
            "start_s": u.start if u else None, "end_s": u.end if u else None,
            "text": p.text if outcome != "refused" else "", "provider": u.provider if u else "",
            "removed": {k: str(v) for k, v in p.removed.items()}, "verified_pause": bool(u and u.verified),
            "first_audio_ms": round(u.first_audio_s * 1000, 1) if u else None})

    def summary(self) -> dict:
        return {"lines": [u.as_row() for u in self.lines], "stats": dict(self.stats), "removed": dict(self.removed),
                "tts": self.tts.status() if hasattr(self.tts, "status") else {}}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if hasattr(self.tts, "close"):
            self.tts.close()
