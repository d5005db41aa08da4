"""A scripted studio on a LiveKit server, for the live tests and `bench/live.py`: cameras that publish stamped frames
and scripted sound on one shared clock, and viewers that read the stamps back from what they receive.

A stamp is the publisher's frame number as black/white blocks along the top-left edge, plus a colour patch that
says which camera it is. The director's program keeps a camera's picture (scaled, overlays elsewhere), so a viewer
knows for every program frame which camera and which moment of that camera it shows, and when it arrived: the
program's latency, its cuts and their placement can be measured from outside, on the received track.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .media import SAMPLE_RATE

STAMP_BITS, STAMP_PX = 14, 20  # frame numbers up to 16383 (11 min at 25 fps), 20 px blocks survive VP8 at 640x360


def stamp(img: np.ndarray, n: int, tag: tuple[int, int, int]) -> np.ndarray:
    """`img` (RGB) with frame number `n` and the camera's colour `tag` drawn along its top-left edge."""
    out = img.copy()
    for b in range(STAMP_BITS):
        out[:STAMP_PX, b * STAMP_PX:(b + 1) * STAMP_PX] = 255 if n >> b & 1 else 0
    x = STAMP_BITS * STAMP_PX + 8
    out[:STAMP_PX * 2, x:x + STAMP_PX * 2] = tag
    return out


def read_stamp(rgb: np.ndarray, stamped_width: int = 640) -> tuple[int, tuple[int, int, int]] | None:
    """(frame number, colour tag) of a stamped frame, also when it arrives scaled (a lower simulcast layer, a
    program of another size); None when it is too small to read."""
    k = rgb.shape[1] / stamped_width
    if STAMP_PX * k < 4:
        return None
    c = STAMP_PX // 2
    n = sum(1 << b for b in range(STAMP_BITS) if rgb[int(c * k), int((b * STAMP_PX + c) * k)].mean() > 128)
    tag = rgb[int(STAMP_PX * k), int((STAMP_BITS * STAMP_PX + 8 + STAMP_PX) * k)]
    return n, tuple(int(v) for v in tag)


def nearest_tag(tags: dict[str, tuple[int, int, int]], tag: tuple[int, int, int]) -> str:
    return min(tags, key=lambda k: sum(abs(a - b) for a, b in zip(tags[k], tag)))


DEV_KEY, DEV_SECRET = "devkey", "secretsecretsecretsecretsecretsecret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def livekit_server(exe: Path, workdir: Path, timeout_s: float = 30.0, ports: tuple[int, int, int] | None = None,
                   rtc_extra: str = "", room_extra: str = ""):
    """A real livekit-server on 127.0.0.1 with dev keys: yields {"url", "api_key", "api_secret", "ports"}. `ports`
    (http, rtc tcp, rtc udp) lets a test restart a server where the last one was; `rtc_extra`: more lines of its
    `rtc:` config, indented two spaces; `room_extra`: lines of its `room:` config (e.g. "  sync_streams: true\n").
    RuntimeError (with the server's output) when it does not come up."""
    if not Path(exe).is_file():
        raise RuntimeError(f"livekit-server is not installed at {exe}: run ./dev.sh setup")
    chosen = ports
    for attempt in range(3):
        ports = chosen or _three_free_ports()
        proc, log_path = _start_livekit(exe, workdir, ports, rtc_extra, room_extra)
        try:
            _wait_until_up(proc, ports[0], log_path, timeout_s)
            break
        except RuntimeError as e:
            _stop(proc)
            # a free port picked here can be taken by another process before the server binds it: pick again
            if chosen is None and attempt < 2 and "address already in use" in str(e):
                continue
            raise
    port, tcp, udp = ports
    try:
        yield {"url": f"ws://127.0.0.1:{port}", "api_key": DEV_KEY, "api_secret": DEV_SECRET,
               "ports": (port, tcp, udp), "pid": proc.pid}
    finally:
        _stop(proc)


def _three_free_ports() -> tuple[int, int, int]:
    picked: list[int] = []  # three different ports (the OS may hand the same free port out twice in a row)
    while len(picked) < 3:
        p = free_port()
        if p not in picked:
            picked.append(p)
    return tuple(picked)  # type: ignore[return-value]


def _start_livekit(exe: Path, workdir: Path, ports, rtc_extra: str, room_extra: str):
    port, tcp, udp = ports
    workdir.mkdir(parents=True, exist_ok=True)
    cfg, log_path = workdir / "livekit.yaml", workdir / "livekit.log"
    cfg.write_text(
        f"port: {port}\nbind_addresses: [127.0.0.1]\n"
        f"rtc:\n  tcp_port: {tcp}\n  udp_port: {udp}\n  use_external_ip: false\n  node_ip: 127.0.0.1\n{rtc_extra}"
        + (f"room:\n{room_extra}" if room_extra else "") +
        f"keys:\n  {DEV_KEY}: {DEV_SECRET}\n"
        f"logging:\n  level: warn\n"
    )
    with open(log_path, "ab") as log:  # a file, not a pipe nobody reads: the server never blocks on its output
        proc = subprocess.Popen([str(exe), "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    return proc, log_path


def _wait_until_up(proc, port: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"livekit-server did not start: {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def token(server: dict, role: str, identity: str, room: str) -> str:
    """A least-privilege token (runtime/tokens.py) for the server's dev keys."""
    from .settings import load_settings
    from .tokens import mint

    s = load_settings(env={}, livekit_api_key=server["api_key"], livekit_api_secret=server["api_secret"])
    return mint(s, role, identity, room)


@dataclass
class ScriptedCamera:
    """A camera participant: frame k of `frames` stamped with its number, sent at t0 + k/fps of the shared clock,
    with the sound of the same moment (`sound`: mono 16 kHz on that clock, silence outside it)."""

    name: str
    frames: list[np.ndarray]
    tag: tuple[int, int, int]
    sound: np.ndarray | None = None
    fps: int = 15
    size: tuple[int, int] = (640, 360)
    sound_skipped_s: float = 0.0  # sound never sent: the mic fell more than 100 ms behind (a starved process)

    async def run(self, server: dict, room_name: str, t0: float, stop: asyncio.Event) -> None:
        from livekit import rtc

        room = rtc.Room()
        await room.connect(server["url"], token(server, "camera", self.name, room_name))
        w, h = self.size
        src = rtc.VideoSource(w, h)
        await room.local_participant.publish_track(rtc.LocalVideoTrack.create_video_track(self.name, src),
                                                   rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        mic = None
        if self.sound is not None:
            # a real mic: no second of sound queued up; room for the sound of a late wake-up (see _mic)
            mic = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=MIC_QUEUE_MS)
            await room.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track(self.name, mic),
                                                       rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        sound = asyncio.ensure_future(self._mic(mic, t0, stop)) if mic is not None else None
        try:
            while not stop.is_set():
                now = time.monotonic() - t0
                n = max(0, int(now * self.fps))
                rgba = cv2.cvtColor(stamp(self.frames[n % len(self.frames)], n, self.tag), cv2.COLOR_RGB2RGBA)
                src.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, rgba.tobytes()))
                await asyncio.sleep(max(0.0, (n + 1) / self.fps - (time.monotonic() - t0)))
        finally:
            if sound is not None:
                sound.cancel()
                await asyncio.gather(sound, return_exceptions=True)
            await room.disconnect()

    async def _mic(self, mic, t0: float, stop: asyncio.Event) -> None:
        """The camera's sound in 10 ms frames as it happens, on its own clock, in step with the picture
        (a sound sent only when the next frame is due would trail the picture by up to a frame, 67 ms at 15 fps)."""
        from livekit import rtc

        hop = SAMPLE_RATE // 100
        j = int((time.monotonic() - t0) * SAMPLE_RATE) // hop * hop
        while not stop.is_set():
            now = int((time.monotonic() - t0) * SAMPLE_RATE)
            if now - j > SAMPLE_RATE * MIC_QUEUE_MS // 1000:  # a mic never sends old sound: skip ahead
                self.sound_skipped_s += (now // hop * hop - hop - j) / SAMPLE_RATE
                j = now // hop * hop - hop
            n = (now - j) // hop * hop
            if n > 0:  # what is due in one frame: one wait for the source, not one per 10 ms (a busy loop resumed
                # each of those late, the mic fell behind for good: half of each camera's sound skipped in a bench)
                await mic.capture_frame(rtc.AudioFrame(_pcm16(self.sound, j, n), SAMPLE_RATE, 1, n))
                j += n
            # woken every 20 ms (one Opus packet): every 10 ms would cost five cameras 500 wake-ups a second
            await asyncio.sleep(max(0.0, (j + 2 * hop) / SAMPLE_RATE - (time.monotonic() - t0)))


MIC_QUEUE_MS = 100  # a scripted camera's mic queue, and how far behind its sound may be sent rather than skipped


def _pcm16(sound: np.ndarray, j: int, n: int) -> bytes:
    """Samples [j, j + n) of `sound` as 16-bit PCM (silence outside it)."""
    out = np.zeros(n, np.float32)
    a, b = max(j, 0), min(j + n, sound.size)
    if b > a:
        out[a - j:b - j] = sound[a:b]
    return (np.clip(out, -1, 1) * 32767).astype(np.int16).tobytes()


async def subscribe(room, wanted: dict[tuple[str, str], asyncio.Future]) -> None:
    """Resolve `wanted[(track name, "video"|"audio")]` with the track as the room subscribes to it."""
    from livekit import rtc

    @room.on("track_subscribed")
    def on_track(track, publication, participant):
        key = (publication.name, "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio")
        fut = wanted.get(key)
        if fut is not None and not fut.done():
            fut.set_result(track)


async def read_stamps(track, out: list, stop: asyncio.Event, render: dict | None = None) -> None:
    """Append (arrival monotonic time, frame number, colour tag) for every frame of a received video track; `render`
    gets {frame number: WebRTC's render time for it} (decoded and out of the jitter buffer, the same monotonic
    clock), which tells the pipeline's delay from this reader's own."""
    from livekit import rtc

    stream = rtc.VideoStream(track)
    try:
        async for ev in stream:
            t = time.monotonic()
            f = ev.frame.convert(rtc.VideoBufferType.RGB24)
            got = read_stamp(np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 3))
            if got is not None:
                out.append((t, *got))
                if render is not None and ev.timestamp_us > 0:
                    render.setdefault(got[0], ev.timestamp_us / 1e6)
            if stop.is_set():
                break
    finally:
        await stream.aclose()


async def read_levels(track, out: list, stop: asyncio.Event, frame_ms: int = 10) -> None:
    """Append (arrival monotonic time, peak |sample|) for every `frame_ms` of a received audio track (16 kHz)."""
    from livekit import rtc

    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=frame_ms)
    try:
        async for ev in stream:
            pcm = np.frombuffer(ev.frame.data, np.int16)
            out.append((time.monotonic(), float(np.abs(pcm).max()) / 32768.0 if pcm.size else 0.0))
            if stop.is_set():
                break
    finally:
        await stream.aclose()
