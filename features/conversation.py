"""Conversation state: who is talking, since when, who holds the floor, and where the pauses were.

Updated once per tick by the director core from logged columns only (the session clock `t`, each camera's
`speech_mask` — voice activity in 8 bins across the tick — and whether that speech is the camera's own, from
`audio_rel_db`), so a replay of the logged rows rebuilds exactly the same state.

- An utterance is a run of a camera's own speech with no silence longer than `utterance_gap_s` inside it.
- The floor passes to a camera whose utterance has lasted `min_turn_s` once the holder has stopped (a backchannel,
  "yeah" inside someone's turn, is shorter and never takes the floor); in overlapping speech the holder keeps it
  until the other has talked for `takeover_s`.
- Pauses are the stretches where the mics on both sides of a cut carry no voice: the only places where switching
  the program audio chops no word. With ASR, a recognised word (`asr_word_spans`) is voice even where the VAD heard a
  pause: when the two disagree, the director does not cut.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MASK_BINS = 8
# times on the tick's bin grid that are equal in exact arithmetic may differ in their last bit: a silence of exactly
# the gap is within it, whichever way the floats rounded
TIME_EPS_S = 1e-6
WORD_PAD_S = 0.03  # keep this clear of a recognised word's edges (ASR word times are approximate)
FLOOR_MIN_PERSON_AREA = 0.05  # the floor needs a person in frame: a soundtrack never holds it


def may_take_floor(own_speech: bool, person_area: float, speech_prob: float, min_speech_prob: float) -> bool:
    """Whether a camera may take the floor now: its own speech, a person in frame, and clear speech (`speech_prob`
    of the tick at least `min_speech_prob`)."""
    return bool(own_speech and person_area > FLOOR_MIN_PERSON_AREA and speech_prob >= min_speech_prob)


@dataclass
class Run:
    start: float | None = None  # start of the current (or last) run of speech
    last: float | None = None  # last moment of own speech


class SpeechRuns:
    """Per camera, its current (or last) run of own speech: speech with no silence longer than `gap_s` inside it.
    With a short gap a run is an utterance (Conversation); with a longer one, the sentences of one turn (the settled
    speaker of features/temporal.py). `tolerance_s` > 0: a silence of exactly `gap_s` keeps the run, however the
    floats of the bin grid round (the settled speaker's turns); 0 compares the floats as they are (the utterances,
    as they were logged since the start: a replay of old rows recomputes the same values)."""

    def __init__(self, gap_s: float, tolerance_s: float = 0.0):
        self.gap = gap_s
        self.tolerance = tolerance_s
        self.runs: dict[str, Run] = {}

    def add(self, t: float, tick_s: float, cam: str, mask: int) -> None:
        """The camera's own speech over [t - tick_s, t], as a mask of MASK_BINS bins (bit 0 = oldest)."""
        mask = int(mask)
        if not mask:
            return
        w = tick_s / MASK_BINS
        run = self.runs.setdefault(cam, Run())
        limit = self.gap + self.tolerance
        if self.gap >= tick_s:  # no gap inside one tick can split a run: its first and last voiced bins say it all
            lo = t - tick_s + ((mask & -mask).bit_length() - 1) * w
            if run.last is None or lo - run.last > limit:
                run.start = lo
            run.last = t - tick_s + (mask.bit_length() - 1) * w + w  # (as the bin loop below computes it)
            return
        for b in range(MASK_BINS):
            if mask >> b & 1:
                lo = t - tick_s + b * w
                if run.last is None or lo - run.last > limit:
                    run.start = lo
                run.last = lo + w

    def get(self, cam: str) -> Run | None:
        return self.runs.get(cam)

    def talking(self, cam: str, t: float) -> bool:
        """Within a run now: its last speech no longer than the gap ago."""
        run = self.runs.get(cam)
        return run is not None and run.last is not None and t - run.last <= self.gap + self.tolerance

    def length(self, cam: str, t: float) -> float:
        """How long the current run has lasted (0 when the camera is not in one)."""
        run = self.runs.get(cam)
        return run.last - run.start if self.talking(cam, t) else 0.0

    def last_speech(self) -> float | None:
        """The last moment anyone spoke."""
        return max((r.last for r in self.runs.values() if r.last is not None), default=None)


class Conversation:
    def __init__(self, *, utterance_gap_s: float, min_turn_s: float, takeover_s: float, keep_s: float):
        self.gap = utterance_gap_s
        self.min_turn = min_turn_s
        self.takeover = takeover_s
        self.keep = keep_s
        self.talk = SpeechRuns(utterance_gap_s)  # utterances
        self.holder: str | None = None
        self.speakers: set[str] = set()  # every camera that has held the floor: its voice is never cut into
        self.holder_since: float | None = None
        self._bins: deque[tuple[float, float, frozenset]] = deque()  # (start, end, mics with voice) per mask bin
        self._words: list[tuple[float, float, str]] = []  # (start, end, mic) of the words the ASR recognised

    def update(self, t: float, tick_s: float, own_masks: dict[str, int], masks: dict[str, int],
               can_hold: set[str] | None = None, words: dict[str, tuple[tuple[float, float], ...]] | None = None
               ) -> None:
        """One tick: `own_masks` = camera -> speech mask of its OWN speech over [t - tick_s, t] (0 = none); `masks`
        = camera -> voice at speaking level on its mic (what its audio would put on the program; a word heard only
        as faint bleed is not chopped audibly);
        `can_hold` = the cameras that may take the floor now (None = all); `words` = camera -> (start, end) of the
        words its ASR recognised since the last tick (they may lie seconds back: a pause is only a pause where the
        VAD and the ASR agree)."""
        for cam, mask in own_masks.items():
            self.talk.add(t, tick_s, cam, mask)
        w = tick_s / MASK_BINS
        for b in range(MASK_BINS):
            lo = t - tick_s + b * w
            self._bins.append((lo, lo + w, frozenset(c for c, m in masks.items() if m >> b & 1)))
        while self._bins and self._bins[0][1] < t - self.keep:
            self._bins.popleft()
        for cam, spans in (words or {}).items():
            self._words.extend((a, b, cam) for a, b in spans)
        self._words = [w for w in self._words if w[1] >= t - self.keep]
        self._pass_floor(t, can_hold)

    def talking(self, cam: str, t: float) -> bool:
        return self.talk.talking(cam, t)

    def utterance_s(self, cam: str, t: float) -> float:
        return self.talk.length(cam, t)

    def onset(self, cam: str, t: float) -> float | None:
        """Start of the camera's current utterance (None when it is not talking)."""
        return self.talk.runs[cam].start if self.talking(cam, t) else None

    def _pass_floor(self, t: float, can_hold: set[str] | None) -> None:
        ready = sorted((tk.start, cam) for cam, tk in self.talk.runs.items()
                       if self.talking(cam, t) and self.utterance_s(cam, t) >= self.min_turn - 1e-9
                       and (can_hold is None or cam in can_hold))
        h = self.holder
        if h is None or not self.talking(h, t):
            new = next((cam for _, cam in ready if cam != h), None)
        else:  # overlap: the holder keeps the floor until the other has clearly taken it
            new = next((cam for start, cam in ready if cam != h and start > self.talk.runs[h].start
                        and self.utterance_s(cam, t) >= self.takeover - 1e-9), None)
        if new is not None:
            self.holder, self.holder_since = new, t
            self.speakers.add(new)

    def pauses(self, lo: float, hi: float, min_s: float, cameras) -> list[tuple[float, float]]:
        """Stretches of [lo, hi] in which no voice is on the mics of `cameras` (the program audio on both sides of a
        cut) nor on the mic of anyone who has spoken in this conversation (their words bleed into every mic: a
        listener's "yeah" too), at least `min_s` long, oldest first."""
        mics = set(cameras) | self.speakers
        out: list[tuple[float, float]] = []
        run: tuple[float, float] | None = None
        for b0, b1, voiced in self._bins:
            if b1 <= lo or b0 >= hi:
                continue
            if voiced & mics:
                if run is not None:
                    out.append(run)
                run = None
            else:
                run = (run[0] if run is not None else max(b0, lo), min(b1, hi))
        if run is not None:
            out.append(run)
        for a, b, mic in self._words:  # a recognised word on one of these mics is no pause, whatever the VAD heard
            if mic in mics and b > lo and a < hi:
                out = [piece for p in out for piece in ((p[0], min(p[1], a - WORD_PAD_S)),
                                                         (max(p[0], b + WORD_PAD_S), p[1])) if piece[1] > piece[0]]
        return [p for p in out if p[1] - p[0] >= min_s - 1e-9]
