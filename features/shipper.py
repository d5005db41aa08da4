"""Moves sealed spool segments into ClickHouse, exactly once.

For each sealed segment, oldest first:

1. Check the footer's CRC. A segment that fails it is *salvaged*: every line that still parses and passes the
   contract ships; the original file goes to ``quarantine/`` with a ``.reason`` beside it and a WARNING names it.
2. If the ledger (``spool_segments``) already has the segment id, the rows are in: only the local mark was lost.
3. Insert the body as JSONEachRow with ``insert_deduplication_token = segment id``: ClickHouse drops a repeat of an
   insert it already acknowledged, so a retry after a lost acknowledgement cannot double the rows.
4. Record the segment in the ledger, then delete (or keep under ``shipped/``) the local file.

ClickHouse unreachable -> the pass stops, the segment stays, nothing is lost; `run` retries with backoff.
ClickHouse rejects a segment -> it is quarantined whole (nothing is deleted) and the rest of the spool ships.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .schema import SchemaViolation, TABLES, Table
from .spool import SEALED_SUFFIX, seal_ok, segment_id, segment_schema_version, split_segment
from .store import FeatureStore, StoreRejected, StoreUnavailable

log = logging.getLogger(__name__)


@dataclass
class ShipReport:
    segments: int = 0
    rows: int = 0
    quarantined: list[str] = field(default_factory=list)
    rows_dropped: int = 0  # unreadable lines of corrupt segments (the original file is kept in quarantine/)
    rows_held: int = 0  # rows of segments ClickHouse refused, kept whole in quarantine/ for a person
    pending: int = 0  # sealed segments still waiting (e.g. ClickHouse went away mid-pass)
    error: str | None = None

    def __iadd__(self, other: "ShipReport") -> "ShipReport":
        self.segments += other.segments
        self.rows += other.rows
        self.quarantined += other.quarantined
        self.rows_dropped += other.rows_dropped
        self.rows_held += other.rows_held
        self.pending = other.pending
        self.error = other.error
        return self


class SegmentShipper:
    def __init__(self, spool_root: str | os.PathLike, store: FeatureStore, *, keep_shipped: bool = False,
                 tables: list[Table] | None = None):
        self.root = Path(spool_root)
        self.store = store
        self.keep_shipped = keep_shipped
        self.tables = tables or list(TABLES.values())
        self._schema_ready = False

    def pending(self) -> list[Path]:
        out: list[Path] = []
        for t in self.tables:
            d = self.root / t.name
            if d.is_dir():
                out.extend(sorted(d.glob("*" + SEALED_SUFFIX)))
            # the service's live rooms spool beside it, one folder each (one writer per spool folder)
            out.extend(sorted(self.root.glob(f"rooms/*/{t.name}/*" + SEALED_SUFFIX)))
        return out

    def ship_once(self) -> ShipReport:
        """Ship every sealed segment now. Never raises for an unreachable store: see report.error."""
        report = ShipReport()
        self.root.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.root / ".shipper.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # one shipper at a time per spool
            segments = self.pending()
            try:
                if not self._schema_ready:
                    self.store.ensure_schema()
                    self._schema_ready = True
                for path in segments:
                    self._ship(path, report)
            except StoreUnavailable as e:
                report.error = str(e)
                log.warning("feature log: %s; %d segment(s) stay spooled and will be retried",
                            e, len(self.pending()))
            report.pending = len(self.pending())
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
        return report

    def run(self, stop: threading.Event, interval_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        """Ship until `stop` is set (server mode: a thread beside the runtime). Backs off while unreachable."""
        delay = interval_s
        while not stop.is_set():
            r = self.ship_once()
            delay = min(max_backoff_s, delay * 2) if r.error else interval_s
            stop.wait(delay)
        self.ship_once()

    # ------------------------------------------------------------------------------------------------------------
    def _ship(self, path: Path, report: ShipReport) -> None:
        table = TABLES[path.parent.name]
        sid = segment_id(path)
        columns = table.columns_at(segment_schema_version(path))
        body, seal = split_segment(path.read_bytes())
        if seal_ok(body, seal):
            rows = seal.rows
        else:
            reason = "missing or unreadable seal" if seal is None else "checksum mismatch"
            body, rows, bad = _salvage(table, columns, body)
            self._quarantine(path, f"{reason}: {bad} unreadable line(s) dropped, {rows} row(s) salvaged and shipped")
            report.quarantined.append(path.name)
            report.rows_dropped += bad
            sid += ":salvaged"
        if self.store.segment_shipped(sid):
            log.info("feature log: %s was already shipped (acknowledgement lost); marking it done", sid)
            self._done(path)
            return
        try:
            self.store.insert_json_rows(table, body, dedup_token=sid, columns=columns)
        except StoreRejected as e:
            # Valid by checksum but refused by ClickHouse (a server-side type change, a hand-edited file): keep the
            # whole segment in quarantine for a person, and ship the rest of the spool.
            if path.exists():
                self._quarantine(path, f"ClickHouse rejected the segment: {e}")
                report.quarantined.append(path.name)
            report.rows_held += rows
            return
        self.store.record_segment(sid, table.name, rows)
        self._done(path)
        report.segments += 1
        report.rows += rows

    def _quarantine(self, path: Path, reason: str) -> None:
        qdir = path.parent / "quarantine"
        qdir.mkdir(exist_ok=True)
        target = qdir / path.name
        os.replace(path, target)
        target.with_name(target.name + ".reason").write_text(reason + "\n")
        log.warning("feature log: quarantined segment %s: %s (kept at %s)", path.name, reason, target)

    def _done(self, path: Path) -> None:
        if not path.exists():  # quarantined: the original lives on in quarantine/
            return
        if self.keep_shipped:
            sdir = path.parent / "shipped"
            sdir.mkdir(exist_ok=True)
            os.replace(path, sdir / path.name)
        else:
            path.unlink()


def _salvage(table: Table, columns: list[str], body: bytes) -> tuple[bytes, int, int]:
    """Keep the lines that parse and pass the contract. Returns (body, rows, dropped)."""
    good: list[bytes] = []
    bad = 0
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
            if not isinstance(values, list) or len(values) != len(columns):
                raise ValueError("not a row of this table")
            table.validate(dict(zip(columns, values)))
        except (ValueError, SchemaViolation, UnicodeDecodeError):
            bad += 1
            continue
        good.append(line + b"\n")
    return b"".join(good), len(good), bad
