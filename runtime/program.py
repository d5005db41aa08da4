"""The live program's timing, picture and sound: when a program frame leaves (ProgramClock), the delay lines the
received frames and sound wait in (FrameRing, AudioRing, placed on the session clock by ArrivalClock), how far the
program's sound may be sent (sound_ready, audio_resume), and the program track's bitrate. Pure and clock-driven: no
LiveKit, no event loop, so every rule is tested on its own (tests/test_live.py) and `runtime/live.py` only wires
them to the room.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

PROGRAM_AUDIO_RATE = 48_000
AUDIO_CHUNK = PROGRAM_AUDIO_RATE // 100  # 10 ms frames, as WebRTC sends them
AUDIO_MARGIN_S = 0.03  # the program sound waits at most this long for a mic's newest packets
AUDIO_QUEUE_MS = 20  # the program AudioSource's queue: what it holds is how far its sound trails the picture
AUDIO_BACKLOG = PROGRAM_AUDIO_RATE * AUDIO_QUEUE_MS // 1000  # what the queue takes at once
# a loop this far behind drops the sound it cannot send in time (a busy loop's usual lateness, tens of ms, is sent:
# the queue absorbs it; a stall past this would otherwise keep the sound late by it for good)
AUDIO_MAX_BEHIND = PROGRAM_AUDIO_RATE * 60 // 1000
AUDIO_FADE = PROGRAM_AUDIO_RATE // 100  # 10 ms crossfade where the program sound changes mic


class ArrivalClock:
    """Session times of a continuous stream (one track's audio) from the times its frames reach us. A busy event
    loop only ever delivers late, so the earliest-arriving explanation wins: a frame starts where the one before
    ended unless it arrived earlier than that (the clock was late: it moves back) or more than `gap_s` later (the
    stream paused: it re-anchors)."""

    def __init__(self, gap_s: float = 0.25):
        self.gap_s = gap_s
        self.next: float | None = None

    def start_of(self, arrived: float, duration: float) -> float:
        est = arrived - duration
        t = est if self.next is None or est < self.next or est > self.next + self.gap_s else self.next
        self.next = t + duration
        return t


def audio_resume(s_next: int | None, s_end: int) -> tuple[int, int]:
    """Where a live sound track goes on, given the next sample it would send and the newest it may send (s_end):
    (the sample to send next, how many samples are left out). After a stall, sound the source's short queue cannot
    take at once would be sent at the pace WebRTC drains it and stay behind the picture by the stall for good (it
    kept the program's sound 100-200 ms late). Once more than AUDIO_MAX_BEHIND is due, what the queue cannot take is
    left out (the stall already left a gap in what the room hears), and the sound goes on from the present."""
    if s_next is None:
        return s_end - AUDIO_CHUNK, 0
    if s_end - s_next > AUDIO_MAX_BEHIND:
        return s_end - AUDIO_BACKLOG, s_end - AUDIO_BACKLOG - s_next
    return s_next, 0


def sound_ready(target: int, arrived: list[int | None]) -> int:
    """How far (absolute sample, exclusive) a live program's sound can be sent: as far as all the mics it is made of
    have arrived (`arrived`: the end of each one's newest frame), so the sound leaves as it comes in rather than a
    fixed margin behind the clock, which kept it that much later than the picture; never past `target` (the program
    clock), and never more than AUDIO_MARGIN_S behind it (a mic that stalls, or none at all, does not hold the
    program's sound back: what never came plays as silence)."""
    floor = target - int(AUDIO_MARGIN_S * PROGRAM_AUDIO_RATE)
    got = [a for a in arrived if a is not None]
    return floor if not got else max(floor, min(target, min(got)))


class ProgramClock:
    """When program frames leave. A fresh frame of the camera on air leaves as soon as it is due, not on the next tick
    of a fixed frame clock (which added half a frame period on average and a whole one at worst to what the program
    adds). The clock still counts `fps` slots a second and every frame sent fills one; a slot that no fresh frame
    filled (a camera slower than the program, a dissolve, the lower third) gets the picture on air again, so the
    program never runs below `fps`. A stall of more than two slots is not made up in a burst of stale frames: those
    frames are counted as never made, and the clock goes on from the present.

    No two frames leave closer than MIN_SPACING periods: WebRTC's frame-rate limit (the source's FramerateController
    at the encoder's `max_framerate`, see `encoder_max_fps`) silently drops a frame that comes sooner, and it was
    dropping ~4% of the program's frames (a repeat that left a few ms before a fresh frame). So a repeat goes where
    it keeps that distance from the frame before and from the camera's next frame (expected from its recent pace);
    where no such place is left before the next frame, that frame fills the slot, and the picture is repeated only if
    it comes more than LATE periods late. Fresh frames leave at least FRESH_GAP periods apart (a 60 fps camera does
    not double the encoder's work)."""

    MIN_SPACING = 0.5  # in program periods, between any two frames sent
    FRESH_GAP = 0.75  # in program periods, between two fresh frames
    LATE = 0.5  # in program periods: a camera frame this late after its expected time gets the picture repeated
    JITTER = 0.125  # in program periods: how much earlier than expected a camera frame may come

    def __init__(self, fps: float, start: float):
        self.period = 1.0 / fps
        self.k = int(start / self.period)  # the slot the next frame fills
        self.last_sent = self.last_fresh = -1e9  # when the last frame / fresh frame was handed over
        self.repeat_at = start
        self.fresh_due: float | None = None  # when the on-air camera's last frame sent was due
        self.intervals: deque = deque(maxlen=9)  # that camera's recent frame intervals
        self.compose_s = 0.0  # how long composing a frame takes, lately

    @staticmethod
    def encoder_max_fps(fps: float) -> float:
        """The `max_framerate` to publish the program with: above what MIN_SPACING lets through, with a margin for
        the time WebRTC's timestamps put between two frames handed over MIN_SPACING apart."""
        return 1.25 * fps / ProgramClock.MIN_SPACING

    def sent(self, at: float, now: float, fresh_due: float | None = None) -> int:
        """A frame composed from `at` was handed to the source at `now`; `fresh_due`: when the camera frame it shows
        was due (a fresh frame), None for a repeat. Returns how many frames the stall before it cost."""
        p = self.period
        self.compose_s = 0.8 * self.compose_s + 0.2 * min(max(0.0, now - at), p)
        if fresh_due is not None:
            if self.fresh_due is not None and 0 < fresh_due - self.fresh_due < 0.5:
                self.intervals.append(fresh_due - self.fresh_due)
            elif self.fresh_due is None or fresh_due - self.fresh_due >= 0.5:
                self.intervals.clear()  # the camera paused (or another came on air): its pace is learnt again
            self.fresh_due, self.last_fresh = fresh_due, now
        self.last_sent = now
        self.k += 1
        behind, missed = now / p - self.k, 0
        if behind > 2:
            missed = int(behind)
            self.k += missed
        self.k = min(self.k, int(now / p) + 2)
        self.repeat_at = max(self.k * p, now + self.MIN_SPACING * p - self.compose_s)  # handed over by then
        return missed

    def expected(self) -> float | None:
        """When the on-air camera's next frame is due, from its recent pace; None until that is known."""
        if self.fresh_due is None or len(self.intervals) < 3:
            return None
        return self.fresh_due + float(np.median(self.intervals))

    def due(self, fresh_at: float | None, cut_at: float | None = None) -> float:
        """When to start composing the next frame, given when the on-air camera's next frame is due (None: it has
        not come yet) and when the next cut placed airs (None: none pending)."""
        p = self.period
        due = self.repeat_at
        nxt = self.expected()
        if nxt is not None and due > nxt - (self.MIN_SPACING + self.JITTER) * p:  # no room for a repeat before the
            due = max(due, nxt + self.LATE * p)  # camera's next frame: that frame fills the slot
        if fresh_at is not None:
            due = min(due, max(fresh_at, self.last_fresh + self.FRESH_GAP * p - self.compose_s))
        if cut_at is not None:
            due = min(due, cut_at)
        return due

    def hold(self, now: float) -> float:
        """How long a frame composed by `now` waits before it is handed over, so that it keeps MIN_SPACING from the
        frame before (and FRESH_GAP from the fresh one before, for a fresh frame: the caller's `due` saw to that)."""
        return max(0.0, self.last_sent + self.MIN_SPACING * self.period - now)


def program_bitrate(size: tuple[int, int], fps: int, kbps: int = 0) -> int:
    """The program's video bitrate in bit/s: `kbps` when set, else about what LiveKit's presets give a camera of the
    program's size (0.07 bit a pixel a frame: 1.6 Mbit/s for 720p at 25 fps), within 0.3-8 Mbit/s."""
    if kbps:
        return int(kbps) * 1000
    return int(min(8e6, max(3e5, size[0] * size[1] * fps * 0.07)))


class FrameRing:
    """One camera's received frames over the last `keep_s` seconds of the session clock: the picture's delay line.
    Frames are kept as LiveKit delivered them (no conversion until one goes on air). The event loop pushes, the
    program thread reads: each call holds the ring's lock."""

    def __init__(self, keep_s: float):
        self.keep_s = keep_s
        self.frames: deque = deque()  # (t, frame), oldest first
        self._lock = threading.Lock()

    def push(self, t: float, frame) -> None:
        with self._lock:
            self.frames.append((t, frame))
            while len(self.frames) > 1 and self.frames[1][0] <= t - self.keep_s:
                self.frames.popleft()

    def at(self, t: float):
        """The newest frame received at or before session time t; None before the first."""
        v = self.stamped_at(t)
        return None if v is None else v[1]

    def stamped_at(self, t: float):
        """(arrival time, frame) of the newest frame received at or before session time t; None before the first."""
        with self._lock:
            for ft, f in reversed(self.frames):
                if ft <= t + 1e-6:
                    return ft, f
        return None

    def arrival_after(self, t: float) -> float | None:
        """When the first frame received after session time t arrived; None if none has yet."""
        nxt = None
        with self._lock:
            for ft, _ in reversed(self.frames):
                if ft <= t + 1e-6:
                    break
                nxt = ft
        return nxt


class AudioRing:
    """One camera's received sound over the last `keep_s` seconds, addressed by absolute sample number on the
    session clock: the sound's delay line. Consecutive frames are laid end to end (arrival jitter does not move
    them); a gap or drift beyond 100 ms re-anchors on the clock. Samples never received read as silence."""

    def __init__(self, keep_s: float, rate: int = PROGRAM_AUDIO_RATE):
        n = max(int(keep_s * rate), rate // 10)
        self.rate = rate
        self.buf = np.zeros(n, np.float32)
        self.idx = np.full(n, -1, np.int64)  # which absolute sample each slot holds
        self.next: int | None = None

    def push(self, t_start: float, samples: np.ndarray) -> None:
        s0 = int(round(t_start * self.rate))
        # a frame stamped a little after the last one's end continues it (arrival jitter leaves no hole); one stamped
        # earlier is taken as stamped: the arrival clock moved back because its first frames reached us late, and a
        # ring that kept the late anchor would put the sound behind the picture for the rest of the session
        if self.next is not None and 0 < s0 - self.next < self.rate // 10:
            s0 = self.next
        n = samples.size
        if n > self.buf.size:
            samples, s0, n = samples[-self.buf.size:], s0 + n - self.buf.size, self.buf.size
        want = s0 + np.arange(n)
        pos = want % self.buf.size
        self.buf[pos] = samples
        self.idx[pos] = want
        self.next = s0 + n

    def read(self, s0: int, n: int) -> np.ndarray:
        want = s0 + np.arange(n)
        pos = want % self.buf.size
        return np.where(self.idx[pos] == want, self.buf[pos], 0.0).astype(np.float32)
