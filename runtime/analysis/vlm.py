"""Vision-language read of the cameras: a transformers image-text model at its own cadence, strict JSON out.

`VlmModel` loads any `AutoModelForImageTextToText` + `AutoProcessor` directory or id and turns RGB frames into
`VlmRead`s. Its precision is chosen from the machine (`choose_precision`): float32 on a CPU, bf16 on a GPU with the
free memory for the weights plus working room, nf4 (bitsandbytes 4-bit) only on a GPU without it (at batch 1 on a big
GPU the 4-bit path is slower than bf16); `aiobs doctor` says which and why. `VlmAnalyzer` runs it on a worker thread:
every `interval_s` it reads the newest frame of EVERY camera that has one, all in ONE batched `generate` (a decode step
for five cameras costs about one camera's on a GPU), padded to a fixed batch (the camera count) with a static KV cache
on CUDA so the compiled decode step is built once. Older frames are dropped, never queued. The age of a read is a
feature; a camera with no read yet gets no VLM features and says why.
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


BF16_HEADROOM = 1.3  # weights x this, plus...
WORK_MEMORY = 2 * 2**30  # ...this much, must be free on the GPU for bf16 (activations, KV cache, the vision tower)
UNKNOWN_SIZE_BF16_MIN_FREE = 12 * 2**30  # a hub id whose size is unknown here: bf16 with this much free


def vlm_param_count(target: str) -> int | None:
    """Parameters of a local transformers model dir, from its safetensors headers (nothing is loaded)."""
    from pathlib import Path

    try:
        from safetensors import safe_open

        n = 0
        for f in sorted(Path(target).glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                for k in st.keys():
                    shape = st.get_slice(k).get_shape()
                    n += int(np.prod(shape)) if shape else 1
        return n or None
    except Exception:  # noqa: BLE001 - not a local dir, no safetensors: unknown
        return None


def choose_precision(target: str, device: str, asked: str = "auto") -> tuple[str, str]:
    """(precision, why): float32 on a CPU; on CUDA bf16 when the GPU has free memory for the weights in bf16 x 1.3 +
    2 GiB, else nf4 when bitsandbytes imports, else bf16 anyway (said). `asked` other than auto is obeyed."""
    if asked != "auto":
        return asked, "configured (AIOBS_VLM_PRECISION)"
    if not device.startswith("cuda"):
        return "float32", "CPU"
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    params = vlm_param_count(target)
    need = params * 2 * BF16_HEADROOM + WORK_MEMORY if params else UNKNOWN_SIZE_BF16_MIN_FREE
    size = f"{params / 1e9:.2f}B parameters" if params else "size unknown"
    if free >= need:
        return "bf16", f"{free / 2**30:.1f} GiB free of {total / 2**30:.0f} GiB >= {need / 2**30:.1f} GiB for bf16 ({size})"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return "bf16", (f"only {free / 2**30:.1f} GiB free (bf16 wants {need / 2**30:.1f} GiB, {size}) and "
                        f"bitsandbytes does not import ({type(e).__name__}): bf16 anyway, it may not fit")
    return "nf4", f"only {free / 2**30:.1f} GiB free, bf16 wants {need / 2**30:.1f} GiB ({size}): 4-bit"


class VlmModel:
    def __init__(self, target: str, device: str = "auto", four_bit: bool | None = None, max_new_tokens: int = 64,
                 precision: str = "auto"):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        kwargs = {}
        if four_bit is not None:  # the older switch: True = nf4, False = the device's plain precision
            precision = "nf4" if four_bit else ("bf16" if device.startswith("cuda") else "float32")
        self.precision, self.precision_reason = choose_precision(target, device, precision)
        if self.precision == "nf4" and not device.startswith("cuda"):
            raise ValueError("nf4 (bitsandbytes 4-bit) needs a CUDA device")
        four_bit = self.precision == "nf4"
        if four_bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.bfloat16)
            kwargs["device_map"] = device
        elif self.precision == "bf16":
            kwargs["dtype"] = torch.bfloat16
        else:
            kwargs["dtype"] = torch.float32
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
    """Batched VLM reads on a worker thread; `observe` is called by the engine every tick and never blocks.

    Every `interval_s` the worker takes the newest unread frame of each camera and reads them all in one `generate`.
    With `static_cache` (default: on CUDA) the batch is padded to a fixed size (the number of cameras known) and the
    KV cache is static, so transformers compiles the decode step once; if that path raises, the analyzer says so once
    and goes on with the dynamic cache."""

    def __init__(self, model: VlmModel, camera_ids: list[str], interval_s: float = 0.7, max_age_s: float = 10.0,
                 start: bool = True, static_cache: bool | None = None):
        self.model = model
        self.camera_ids = list(camera_ids)
        self.interval_s = interval_s
        self.max_age_s = max_age_s
        self.static_cache = str(getattr(model, "device", "cpu")).startswith("cuda") if static_cache is None \
            else static_cache
        self.static_cache_error: str | None = None
        self._frames: dict[str, tuple[float, np.ndarray]] = {}
        self._reads: dict[str, VlmRead] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.latency_ms: list[float] = []  # per batched read
        self.batch_sizes: list[int] = []  # cameras per batched read
        self._thread = threading.Thread(target=self._loop, name="vlm", daemon=True)
        if start:
            self._thread.start()

    @classmethod
    def from_settings(cls, settings, camera_ids: list[str]) -> "VlmAnalyzer":
        resolved = resolve_vlm(settings.vlm_model, offline=settings.offline)
        model = VlmModel(resolved.target, device=settings.device, precision=settings.vlm_precision,
                         max_new_tokens=settings.vlm_max_new_tokens)
        log.info("VLM %s: %s (%s)", resolved.target, model.precision, model.precision_reason)
        static = None if settings.vlm_static_cache == "auto" else settings.vlm_static_cache == "on"
        return cls(model, camera_ids, static_cache=static)

    def observe(self, camera_id: str, obs: CameraObservation, fresh, t: float) -> None:
        with self._lock:
            if fresh is not None:
                self._frames[camera_id] = fresh
                if camera_id not in self.camera_ids:  # a camera that joined later
                    self.camera_ids.append(camera_id)
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
        self._read_batch({camera_id: frame})
        return self._reads.get(camera_id)

    def read_due(self) -> int:
        """Read every camera's newest unread frame in one batch, now; returns how many cameras were read."""
        with self._lock:
            due, self._frames = self._frames, {}
        if due:
            self._read_batch(due)
        return len(due)

    def _read_batch(self, due: dict[str, tuple[float, np.ndarray]]) -> None:
        ids = list(due)
        frames = [due[c][1] for c in ids]
        times = [due[c][0] for c in ids]
        t0 = time.perf_counter()
        try:
            results = self._generate(frames, times)
        except Exception as e:  # noqa: BLE001 - a model error degrades every camera of this batch, never crashes
            results = [e] * len(ids)
        with self._lock:
            for c, r in zip(ids, results):
                if isinstance(r, VlmRead):
                    self._reads[c] = r
                    self._errors.pop(c, None)
                else:
                    self._errors[c] = f"{type(r).__name__}: {str(r)[:160]}"
        self.latency_ms.append((time.perf_counter() - t0) * 1000)
        self.batch_sizes.append(len(ids))

    def _generate(self, frames: list[np.ndarray], times: list[float]) -> list:
        n = len(frames)
        if self.static_cache and self.static_cache_error is None:
            size = max(n, len(self.camera_ids))  # a fixed batch: the compiled decode step is built once
            padded = frames + [frames[-1]] * (size - n)
            try:
                return self.model.read_many(padded, times + [times[-1]] * (size - n),
                                            cache_implementation="static")[:n]
            except Exception as e:  # noqa: BLE001 - the dynamic cache still works: say so once, go on
                self.static_cache_error = f"{type(e).__name__}: {str(e)[:200]}"
                log.warning("VLM: static-cache reads failed (%s); reading with the dynamic cache from now on",
                            self.static_cache_error)
        return self.model.read_many(frames, times)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            n = self.read_due()
            self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)) if n else 0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
