"""A local, durable spool for feature-log rows: the runtime never waits on ClickHouse.

Layout (one directory per contract table)::

    <root>/<table>/<created_ns>-<id>.open     the segment being written (one writer per table directory)
    <root>/<table>/<created_ns>-<id>.seg      sealed: fsync'd, with a footer line carrying row count + CRC32
    <root>/<table>/quarantine/                 segments that failed their checksum or were rejected, + .reason
    <root>/<table>/shipped/                    shipped segments, when the shipper is told to keep them

A segment is ClickHouse's JSONCompactEachRow: one validated row per line as a JSON array in the column order of the
schema version named in the file name (``...-<id>.v<version>.seg``), then one footer line::

    #aiobs-seal {"rows": N, "crc32": C, "bytes": B}

Guarantees: `append` returns only after the row is validated against the contract and handed to the OS (it survives
the process being killed); sealing fsyncs the segment and its directory (it survives power loss). A writer that
starts after a crash seals the `.open` segments it finds, dropping only an incomplete last line (a row whose `append`
never returned).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .schema import SCHEMA_VERSION, Table

try:  # orjson is ~5x faster; the stdlib encoder is the fallback
    import orjson

    def _dumps(values: list) -> bytes:
        return orjson.dumps(values)
except ImportError:  # pragma: no cover
    def _dumps(values: list) -> bytes:
        return json.dumps(values, separators=(",", ":"), allow_nan=False).encode()

log = logging.getLogger(__name__)

OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"
FOOTER_PREFIX = b"#aiobs-seal "


class SpoolLocked(RuntimeError):
    """Another live process already writes this spool directory."""


@dataclass(frozen=True)
class Seal:
    rows: int
    crc32: int
    bytes: int

    def line(self) -> bytes:
        return FOOTER_PREFIX + json.dumps({"rows": self.rows, "crc32": self.crc32, "bytes": self.bytes}).encode() + b"\n"


def split_segment(data: bytes) -> tuple[bytes, Seal | None]:
    """(body, seal) of a segment's bytes; seal is None when the footer is missing or unreadable."""
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1  # start of the last line
    last = data[cut:]
    if not last.startswith(FOOTER_PREFIX):
        return data, None
    try:
        meta = json.loads(last[len(FOOTER_PREFIX):])
        return data[:cut], Seal(int(meta["rows"]), int(meta["crc32"]), int(meta["bytes"]))
    except (ValueError, KeyError, TypeError):
        return data[:cut], None


def seal_ok(body: bytes, seal: Seal | None) -> bool:
    return seal is not None and seal.bytes == len(body) and seal.crc32 == zlib.crc32(body)


def segment_id(path: Path) -> str:
    """Stable id of a segment (its table + file stem): the ClickHouse insert-deduplication token."""
    return f"{path.parent.name}/{path.name.split('.')[0]}"


def segment_schema_version(path: Path) -> int:
    """The schema version a segment was written under (its rows' column order)."""
    parts = path.name.split(".")
    if len(parts) >= 3 and parts[1].startswith("v") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    raise ValueError(f"segment {path.name} does not name its schema version")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Append-only writer for one contract table. Not thread-safe: give each thread its own table or a lock."""

    def __init__(self, root: str | os.PathLike, table: Table, *, max_rows: int = 5000, max_age_s: float = 2.0):
        self.table = table
        self.dir = Path(root) / table.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._lock_fd = os.open(self.dir / ".writer.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolLocked(f"another process is writing the spool {self.dir}") from None
        self._fd: int | None = None
        self._path: Path | None = None
        self._rows = 0
        self._crc = 0
        self._bytes = 0
        self._opened_at = 0.0
        self.rows_written = 0
        self.recovered = self._recover()

    # -- crash recovery ---------------------------------------------------------------------------------------------
    def _recover(self) -> list[Path]:
        """Seal segments a dead writer left open. Only an incomplete final line is dropped."""
        sealed = []
        for p in sorted(self.dir.glob("*" + OPEN_SUFFIX)):
            data = p.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                log.warning("spool %s: dropping an incomplete last line (%d bytes) left by a killed writer",
                            p.name, len(data) - keep)
            body = data[:keep]
            rows = body.count(b"\n")
            if rows == 0:
                p.unlink()
                continue
            with open(p, "r+b") as f:
                f.truncate(keep)
                f.seek(keep)
                f.write(Seal(rows, zlib.crc32(body), len(body)).line())
                f.flush()
                os.fsync(f.fileno())
            target = p.with_suffix(SEALED_SUFFIX)
            os.replace(p, target)
            sealed.append(target)
            log.info("spool %s: recovered %d rows from an unsealed segment", target.name, rows)
        if sealed:
            _fsync_dir(self.dir)
        return sealed

    # -- writing ----------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.v{SCHEMA_VERSION}{OPEN_SUFFIX}"
        self._path = self.dir / name
        self._fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
        self._rows = self._crc = self._bytes = 0
        self._opened_at = time.monotonic()

    def _write(self, data: bytes, rows: int) -> None:
        if self._fd is None:
            self._open()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._crc = zlib.crc32(data, self._crc)
        self._bytes += len(data)
        self._rows += rows
        self.rows_written += rows
        if self._rows >= self.max_rows or time.monotonic() - self._opened_at >= self.max_age_s:
            self.rotate()

    def append(self, row: Mapping[str, Any]) -> None:
        """Validate one row against the contract and spool it. Raises SchemaViolation for a bad row."""
        self._write(_dumps(self.table.values(row)) + b"\n", 1)

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Validate every row first (all or nothing), then spool them in one write."""
        valid = [self.table.values(r) for r in rows]
        if valid:
            self._write(b"".join(_dumps(r) + b"\n" for r in valid), len(valid))
        return len(valid)

    def maybe_rotate(self) -> Path | None:
        """Seal the open segment if it is older than max_age_s; call it from an idle loop."""
        if self._fd is not None and time.monotonic() - self._opened_at >= self.max_age_s:
            return self.rotate()
        return None

    def rotate(self) -> Path | None:
        """Seal the open segment (footer + fsync + rename) so the shipper may take it."""
        if self._fd is None:
            return None
        # If anything below fails, the .open file stays behind and the next writer's recovery seals it.
        fd, path = self._fd, self._path
        self._fd = self._path = None
        if self._rows == 0:
            os.close(fd)
            path.unlink()
            return None
        os.write(fd, Seal(self._rows, self._crc, self._bytes).line())
        os.fsync(fd)
        os.close(fd)
        target = path.with_suffix(SEALED_SUFFIX)
        os.replace(path, target)
        _fsync_dir(self.dir)
        return target

    def close(self) -> None:
        if self._lock_fd is None:
            return
        try:
            self.rotate()
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "SpoolWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureLog:
    """The runtime's one handle on the feature log: a spool writer per contract table under one root."""

    def __init__(self, root: str | os.PathLike, tables: Iterable[Table], **writer_kwargs):
        self.root = Path(root)
        self.writers = {t.name: SpoolWriter(self.root, t, **writer_kwargs) for t in tables}

    def append(self, table: str, row: Mapping[str, Any]) -> None:
        self.writers[table].append(row)

    def extend(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.writers[table].extend(rows)

    def maybe_rotate(self) -> None:
        for w in self.writers.values():
            w.maybe_rotate()

    def flush(self) -> None:
        for w in self.writers.values():
            w.rotate()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def __enter__(self) -> "FeatureLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
