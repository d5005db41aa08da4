"""Vision-language read of the cameras: a transformers image-text model at its own cadence, strict JSON out.

`VlmModel` loads any `AutoModelForImageTextToText` + `AutoProcessor` directory or id (4-bit through bitsandbytes on
CUDA when asked) and turns one RGB frame into a `VlmRead`. `VlmAnalyzer` runs it on a worker thread, round-robin over
the cameras, one call every `interval_s`, always on the newest frame of the camera whose turn it is (older frames are
dropped, never queued). The age of a read is a feature; a camera with no read yet gets no VLM features and says why.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import numpy as np

from features.observations import CameraObservation, VlmRead
from runtime.models import resolve_vlm

log = logging.getLogger(__name__)

PROMPT = (
    "You direct a live multi-camera show. Rate this camera shot. Answer with ONE JSON object and nothing else: "
    '{"scene": "<stage|crowd|closeup|wide|empty|other>", "subjects": ["<main subjects>"], '
    '"activity": "<what happens>", "focus": "<sharp|soft|blurred>", "interest": <1-5>}'
)


class VlmParseError(ValueError):
    """The model's answer held no usable JSON object with an interest rating."""


_OBJECT = re.compile(r"\{.*?\}", re.S)


def parse_vlm_answer(text: str, t: float) -> VlmRead:
    """Robust parse of a model answer: the first JSON object in it (code fences, prose, single quotes and trailing
    commas tolerated); `interest` is required and clipped to 1..5."""
    candidates = _OBJECT.findall(text.replace("```json", "").replace("```", ""))
    for raw in candidates:
        for attempt in (raw, re.sub(r",\s*([}\]])", r"\1", raw.replace("'", '"'))):
            try:
                obj = json.loads(attempt)
            except ValueError:
                continue
            if not isinstance(obj, dict) or "interest" not in obj:
                continue
            try:
                interest = float(obj["interest"])
            except (TypeError, ValueError):
                continue
            if not np.isfinite(interest):
                continue
            subjects = obj.get("subjects") or ()
            if isinstance(subjects, str):
                subjects = (subjects,)
            return VlmRead(t=t, interest=float(min(5.0, max(1.0, interest))), scene=str(obj.get("scene", ""))[:64],
                           subjects=tuple(str(s)[:64] for s in subjects)[:8],
                           activity=str(obj.get("activity", ""))[:128], focus=str(obj.get("focus", ""))[:32])
    raise VlmParseError(f"no JSON object with an interest rating in the answer: {text[:120]!r}")


class VlmModel:
    def __init__(self, target: str, device: str = "auto", four_bit: bool | None = None, max_new_tokens: int = 96):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        kwargs = {}
        if four_bit is None:
            four_bit = device.startswith("cuda")
        if four_bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = device
        elif device.startswith("cuda"):
            kwargs["dtype"] = torch.bfloat16
        self.processor = AutoProcessor.from_pretrained(target)
        self.model = AutoModelForImageTextToText.from_pretrained(target, **kwargs)
        if not four_bit:
            self.model.to(device)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        self.prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def answer(self, rgb: np.ndarray) -> str:
        import torch

        inputs = self.processor(images=[rgb], text=[self.prompt], return_tensors="pt").to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def read(self, rgb: np.ndarray, t: float) -> VlmRead:
        return parse_vlm_answer(self.answer(rgb), t)

    def answer_many(self, frames: list[np.ndarray], **generate_kwargs) -> list[str]:
        """The answers for several frames (one per camera, say) from ONE batched `generate`: on a GPU a decode step
        for five cameras costs about what one camera's does. Same prompt and greedy decoding as `answer`; extra
        `generate` arguments (e.g. `cache_implementation="static"`) pass through."""
        import torch

        frames = list(frames)
        if not frames:
            return []
        kwargs = {}
        if len(frames) > 1 and getattr(getattr(self.processor, "tokenizer", None), "pad_token", None) is not None:
            # rows of unequal length (processors that expand images by size) are padded on the left: generation
            # continues every row from its right end
            kwargs = {"padding": True, "padding_side": "left"}
        inputs = self.processor(images=frames, text=[self.prompt] * len(frames), return_tensors="pt",
                                **kwargs).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      **generate_kwargs)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def read_many(self, frames: list[np.ndarray], t, **generate_kwargs) -> list[VlmRead | VlmParseError]:
        """`read` for several frames in one batched `generate`. `t` is one time for all frames or one per frame.
        One list item per frame, in order: its `VlmRead`, or the `VlmParseError` its answer raised (one camera's
        malformed answer does not lose the others')."""
        frames = list(frames)
        times = [float(x) for x in t] if isinstance(t, (list, tuple, np.ndarray)) else [float(t)] * len(frames)
        if len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(times)} times")
        out: list[VlmRead | VlmParseError] = []
        for text, ti in zip(self.answer_many(frames, **generate_kwargs), times):
            try:
                out.append(parse_vlm_answer(text, ti))
            except VlmParseError as e:
                out.append(e)
        return out


class VlmAnalyzer:
    """Round-robin VLM reads on a worker thread; `observe` is called by the engine every tick and never blocks."""

    def __init__(self, model: VlmModel, camera_ids: list[str], interval_s: float = 0.7, max_age_s: float = 10.0,
                 start: bool = True):
        self.model = model
        self.camera_ids = list(camera_ids)
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._reads: dict[str, VlmRead] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.latency_ms: list[float] = []
        self._thread = threading.Thread(target=self._loop, name="vlm", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def from_settings(cls, settings, camera_ids: list[str]) -> "VlmAnalyzer":
        resolved = resolve_vlm(settings.vlm_model, offline=settings.offline)
        return cls(VlmModel(resolved.target, device=settings.device), camera_ids)

    def observe(self, camera_id: str, obs: CameraObservation, fresh, t: float) -> None:
        with self._lock:
            if fresh is not None:
                self._frames[camera_id] = fresh
            read = self._reads.get(camera_id)
            err = self._errors.get(camera_id)
        if read is not None and t - read.t <= self.max_age_s:
            obs.vlm = read
        else:
            obs.degraded["vlm"] = err or ("no VLM read yet" if read is None else "VLM read too old")

    def read_now(self, camera_id: str) -> VlmRead | None:
        """One synchronous read of the newest frame of a camera (tests, offline evaluation)."""
        with self._lock:
            frame = self._frames.get(camera_id)
        if frame is None:
            return None
        self._read(camera_id, frame)
        return self._reads.get(camera_id)

    def _read(self, camera_id: str, frame: tuple[float, np.ndarray]) -> None:
        t0 = time.perf_counter()
        try:
            read = self.model.read(frame[1], frame[0])
            with self._lock:
                self._reads[camera_id] = read
                self._errors.pop(camera_id, None)
        except Exception as e:  # noqa: BLE001 - malformed output or a model error degrades, never crashes
            with self._lock:
                self._errors[camera_id] = f"{type(e).__name__}: {str(e)[:160]}"
        self.latency_ms.append((time.perf_counter() - t0) * 1000)

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            cid = self.camera_ids[i % len(self.camera_ids)]
            i += 1
            with self._lock:
                frame = self._frames.pop(cid, None)  # newest frame only; consumed
            if frame is not None:
                self._read(cid, frame)
            self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)) if frame else 0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
