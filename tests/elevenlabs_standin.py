"""A local HTTP server that speaks ElevenLabs' text-to-speech contract, for the real SDK pointed at it by base URL.

POST /v1/text-to-speech/{voice_id}[/stream]?output_format=pcm_<rate> with JSON {"text", "model_id", ...} and the
`xi-api-key` header -> raw 16-bit mono PCM (chunked when streamed). The audio is a tone (TONE_HZ) of
`SECONDS_PER_CHAR` per character, so a test can tell this voice from Piper and check an utterance is whole.

Faults, consumed one per request from `server.faults` (then `server.fail_if(text)`, then `server.default`): "ok",
"429", "500", "401", "timeout" (no answer for `hang_s`), "stall" (half the audio, then nothing for `hang_s`, then the
connection ends).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np

TONE_HZ = 440.0
SECONDS_PER_CHAR = 0.04
API_KEY = "test-key"


def tone(text: str, rate: int) -> np.ndarray:
    n = int(rate * SECONDS_PER_CHAR * max(1, len(text)))
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / rate)).astype(np.float32)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - GET /v1/models: what `aiobs doctor` asks
        srv: StandIn = self.server.standin  # type: ignore[attr-defined]
        srv.requests.append({"path": self.path, "key": self.headers.get("xi-api-key"), "fault": "", "body": {}})
        if urlparse(self.path).path != "/v1/models":
            return self._error(404, "not found")
        if self.headers.get("xi-api-key") != API_KEY:
            return self._error(401, "invalid api key")
        data = json.dumps([{"model_id": "eleven_flash_v2_5", "name": "Flash v2.5"}]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): what a stalled server sees

    def _answer(self) -> None:
        srv: StandIn = self.server.standin  # type: ignore[attr-defined]
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        parts = url.path.strip("/").split("/")
        text = json.loads(body or b"{}").get("text", "")
        fault = srv.faults.popleft() if srv.faults else (srv.fail_if(text) if srv.fail_if else None) or srv.default
        srv.requests.append({"path": url.path, "query": parse_qs(url.query), "key": self.headers.get("xi-api-key"),
                             "body": json.loads(body or b"{}"), "fault": fault, "t": time.monotonic()})
        if len(parts) < 3 or parts[:2] != ["v1", "text-to-speech"]:
            return self._error(404, "not found")
        if self.headers.get("xi-api-key") != API_KEY or fault == "401":
            return self._error(401, "invalid api key")
        if fault in ("429", "500"):
            return self._error(int(fault), "too many requests" if fault == "429" else "internal error")
        if fault == "timeout":
            time.sleep(srv.hang_s)
            return self._error(504, "late")
        fmt = parse_qs(url.query).get("output_format", ["pcm_16000"])[0]
        rate = int(fmt.split("_")[1]) if fmt.startswith("pcm_") else 16000
        pcm = (tone(text, rate) * 32767).astype("<i2").tobytes()
        self.send_response(200)
        self.send_header("content-type", "audio/pcm")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        step = rate // 10 * 2  # 100 ms per chunk
        for i in range(0, len(pcm), step):
            if fault == "stall" and i >= len(pcm) // 2:
                self.wfile.flush()
                time.sleep(srv.hang_s)
                self.close_connection = True
                return
            chunk = pcm[i:i + step]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            if srv.chunk_delay_s:
                self.wfile.flush()
                time.sleep(srv.chunk_delay_s)
        self.wfile.write(b"0\r\n\r\n")

    def _error(self, code: int, msg: str) -> None:
        data = json.dumps({"detail": {"status": "error", "message": msg}}).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandIn:
    def __init__(self, hang_s: float = 3.0, chunk_delay_s: float = 0.0):
        self.faults: deque[str] = deque()
        self.default = "ok"
        self.fail_if = None  # text -> a fault name or None: fail the lines that say something in particular
        self.hang_s = hang_s
        self.chunk_delay_s = chunk_delay_s
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.standin = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "StandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
