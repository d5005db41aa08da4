"""The program compositor: cut or dissolve between cameras, lower third, logo, optional tally/debug overlay.

Works on RGB numpy frames with OpenCV. Overlays are rendered once per text into small RGBA tiles and blended only
over their region, so a 720p frame with cut + overlays costs a few milliseconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class CompositorConfig:
    size: tuple[int, int] | None = (1280, 720)  # output width, height; None = the front door picks (direct: input's)
    fps: int = 25  # program frame rate (files and live)
    dissolve_s: float = 0.3
    lower_third_s: float = 4.0  # how long the lower third stays up after a cut
    lower_third: bool = True
    logo_text: str = "AI-OBS"
    logo_path: str | None = None  # an RGBA PNG; replaces logo_text
    tally: bool = False  # debug overlay: every camera's score, program in red


def _rgba_tile(text_lines: list[tuple[str, float, tuple[int, int, int]]], width: int, height: int,
               bg=(16, 16, 24), bg_alpha=0.72, k: float = 1.0) -> np.ndarray:
    """A translucent box with text; sizes are for 720p and scaled by k (output height / 720)."""
    width, height = max(8, int(width * k)), max(8, int(height * k))
    tile = np.zeros((height, width, 4), np.uint8)
    tile[..., :3] = bg
    tile[..., 3] = int(255 * bg_alpha)
    y = 0
    for text, scale, colour in text_lines:
        (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale * k, 1)
        y += th + base + max(2, int(6 * k))
        cv2.putText(tile, text, (max(4, int(14 * k)), y - base), cv2.FONT_HERSHEY_DUPLEX, scale * k, (*colour, 255),
                    1, cv2.LINE_AA)
    return tile


def _blend(dst: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    h, w = tile.shape[:2]
    h, w = min(h, dst.shape[0] - y), min(w, dst.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    roi = dst[y:y + h, x:x + w]
    a = tile[:h, :w, 3:4].astype(np.uint16)
    roi[:] = ((tile[:h, :w, :3].astype(np.uint16) * a + roi.astype(np.uint16) * (255 - a)) // 255).astype(np.uint8)


class Compositor:
    def __init__(self, config: CompositorConfig | None = None, camera_names: dict[str, str] | None = None):
        self.config = config or CompositorConfig()
        if self.config.size is None:
            raise ValueError("CompositorConfig.size must be set before compositing")
        self.names = dict(camera_names or {})
        self.program = ""
        self.previous = ""
        self.cut_t = -1e9
        self.transition = "cut"
        self.caption = ""
        self._tiles: dict[tuple, np.ndarray] = {}
        self._k = self.config.size[1] / 720.0  # overlay scale: designed for 720p
        self._logo = self._load_logo()

    def _load_logo(self) -> np.ndarray:
        cfg = self.config
        if cfg.logo_path:
            img = cv2.imread(str(Path(cfg.logo_path)), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise FileNotFoundError(f"logo {cfg.logo_path} is not a readable image")
            if img.shape[2] == 3:
                img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        return _rgba_tile([(cfg.logo_text, 0.8, (240, 240, 240))], 150, 40, bg_alpha=0.5, k=self._k)

    # -- state -------------------------------------------------------------------------------------------------------
    def cut_to(self, camera: str, t: float, transition: str = "cut", caption: str = "") -> None:
        if camera == self.program:
            return
        self.previous, self.program = self.program, camera
        self.cut_t = t
        self.transition = transition or "cut"
        self.caption = caption

    # -- rendering ---------------------------------------------------------------------------------------------------
    def _fit(self, frame: np.ndarray | None) -> np.ndarray:
        w, h = self.config.size
        if frame is None:
            return np.zeros((h, w, 3), np.uint8)  # a camera without a frame shows black, never crashes
        if frame.shape[1] != w or frame.shape[0] != h:
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        return frame

    def compose(self, t: float, frames: dict[str, np.ndarray | None],
                scores: dict[str, float] | None = None) -> np.ndarray:
        cfg = self.config
        out = self._fit(frames.get(self.program)).copy()
        since = t - self.cut_t
        if self.transition == "dissolve" and self.previous and 0 <= since < cfg.dissolve_s:
            prev = self._fit(frames.get(self.previous))
            a = since / cfg.dissolve_s
            cv2.addWeighted(out, a, prev, 1.0 - a, 0.0, dst=out)
        w, h = cfg.size
        if cfg.lower_third and self.program and 0 <= since < cfg.lower_third_s:
            key = ("lt", self.program, self.caption)
            if key not in self._tiles:
                lines = [(self.names.get(self.program, self.program), 0.9, (255, 255, 255))]
                if self.caption:
                    lines.append((self.caption[:80], 0.55, (190, 200, 215)))
                self._tiles[key] = _rgba_tile(lines, 620, 78 if self.caption else 48, k=self._k)
            m = int(40 * self._k)
            _blend(out, self._tiles[key], m, h - m - self._tiles[key].shape[0])
        _blend(out, self._logo, w - self._logo.shape[1] - int(24 * self._k), int(20 * self._k))
        if cfg.tally and scores:
            self._tally(out, scores)
        return out

    def _tally(self, out: np.ndarray, scores: dict[str, float]) -> None:
        y = 28
        for cam, s in sorted(scores.items()):
            colour = (255, 60, 60) if cam == self.program else (220, 220, 220)
            cv2.rectangle(out, (20, y - 12), (20 + int(120 * max(0.0, min(1.0, s))), y), colour, -1)
            cv2.putText(out, f"{cam} {s:.2f}", (150, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
            y += 20
