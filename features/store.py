"""ClickHouse access for the feature log, through clickhouse-connect.

One code path for both backends: ``chdb:///path`` (the real ClickHouse engine, in-process; only one process may
open a path at a time) and ``http(s)://host:port`` (a ClickHouse server). Everything above this module speaks to
`FeatureStore`, never to the driver.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import pandas as pd

from .migrations import MIGRATIONS_TABLE, SEGMENTS_TABLE, current_version, ensure_schema
from .schema import TABLES, Table, table as table_named

log = logging.getLogger(__name__)


class StoreUnavailable(ConnectionError):
    """ClickHouse cannot be reached (server down, chdb path locked by another process, bad DSN)."""


class StoreRejected(ValueError):
    """ClickHouse was reached but refused the data or the query (parse error, type mismatch)."""


def describe_dsn(dsn: str) -> str:
    """The DSN without credentials, for logs and `aiobs doctor`."""
    u = urlparse(dsn)
    if u.scheme == "chdb":
        return f"chdb (embedded) at {u.path or '(memory)'}"
    host = u.hostname or "?"
    return f"ClickHouse server {u.scheme}://{host}:{u.port or ''}"


def _connect(dsn: str, connect_timeout: float):
    import clickhouse_connect
    u = urlparse(dsn)
    if u.scheme == "chdb":
        if u.path:
            os.makedirs(u.path, exist_ok=True)
    elif u.scheme not in ("http", "https"):
        raise StoreUnavailable(f"unsupported ClickHouse DSN {dsn!r}: use chdb:///path or http(s)://host:port")
    try:
        kwargs: dict[str, Any] = {"dsn": dsn}
        if u.scheme != "chdb":
            kwargs.update(connect_timeout=max(1, int(connect_timeout)), query_retries=0)
        return clickhouse_connect.get_client(**kwargs)
    except Exception as e:  # ClickHouseError, or chdb's own ("Code: 36 ... EmbeddedServer" when the path is locked)
        raise _cannot_open(dsn, e) from e


def _cannot_open(dsn: str, e: BaseException) -> StoreUnavailable:
    if dsn.startswith("chdb:") and _held_elsewhere(urlparse(dsn).path):
        return StoreUnavailable(
            f"the feature log at {describe_dsn(dsn)} is in use by another process (embedded chDB opens in one process "
            "at a time: a running `aiobs direct`/`live`/`simulate`, `bentoml serve`, a notebook kernel or a Dagster "
            "run): wait for it or stop it, give this command another data dir, or use a ClickHouse server "
            "(AIOBS_CLICKHOUSE_DSN=http://...)")
    return StoreUnavailable(f"ClickHouse unreachable: cannot open {describe_dsn(dsn)}: {_first_line(e)}")


def _held_elsewhere(path: str) -> bool:
    """Another process runs an embedded ClickHouse on `path` (it holds the lock on its `status` file)."""
    import fcntl

    try:
        with open(os.path.join(path, "status"), "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # no status file: nobody runs there
        pass
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _classify(e: Exception, what: str) -> Exception:
    """Map driver errors to: unreachable (retry later) vs rejected (the data/query is wrong)."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(e, OperationalError):
        return StoreUnavailable(f"{what}: ClickHouse unreachable: {_first_line(e)}")
    if isinstance(e, DatabaseError):
        return StoreRejected(f"{what}: ClickHouse rejected it: {_first_line(e)}")
    if isinstance(e, (ConnectionError, OSError, TimeoutError)):
        return StoreUnavailable(f"{what}: ClickHouse unreachable: {_first_line(e)}")
    return e


@dataclass
class FeatureStore:
    """The feature log's tables in one ClickHouse database."""

    dsn: str
    connect_timeout: float = 5.0

    def __post_init__(self) -> None:
        self._client = None

    # -- connection -------------------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self._client = _connect(self.dsn, self.connect_timeout)
        return self._client

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (StoreUnavailable, StoreRejected):
            raise
        except Exception as e:
            mapped = _classify(e, what)
            if isinstance(mapped, StoreUnavailable):
                self.close()  # reconnect next time
            raise mapped from e

    def ping(self) -> str:
        """The server version; raises StoreUnavailable when it cannot be reached."""
        return self._run("ping", lambda: str(self.client.query("SELECT version()").result_rows[0][0]))

    def ensure_schema(self) -> int:
        return self._run("ensure schema", ensure_schema, self.client)

    def schema_version(self) -> int:
        """The feature-schema version the database is at (0 = no contract tables yet); reads only."""
        def read(client) -> int:
            return current_version(client) if client.query(f"EXISTS TABLE {MIGRATIONS_TABLE}").result_rows[0][0] else 0

        return self._run("schema version", read, self.client)

    # -- writes (used by the spool shipper) -------------------------------------------------------------------------
    def insert_json_rows(self, table: Table, payload: bytes, dedup_token: str,
                         columns: Sequence[str] | None = None) -> None:
        """Insert newline-delimited JSON arrays (JSONCompactEachRow) in `columns` order (default: all, current).

        A repeat with the same `dedup_token` is dropped by ClickHouse, so a retried insert cannot double rows.
        """
        if not payload:
            return
        cols = list(columns) if columns else table.column_names
        self._run(
            f"insert into {table.name}",
            lambda: self.client.raw_insert(
                table.name, cols, insert_block=payload, fmt="JSONCompactEachRow",
                settings={"insert_deduplication_token": dedup_token},
            ),
        )

    def insert_frame(self, table: str | Table, df: pd.DataFrame) -> int:
        """Bulk-insert a DataFrame of contract columns (simulations, backfills). `ts` may be UNIX seconds."""
        t = table if isinstance(table, Table) else table_named(table)
        unknown = [c for c in df.columns if c not in t]
        if unknown:
            raise KeyError(f"{t.name} has no column(s) {unknown}")
        missing = [c.name for c in t.columns if c.required and c.name not in df.columns]
        if missing:
            raise KeyError(f"{t.name}: required column(s) {missing} missing")
        df = df.copy()
        if pd.api.types.is_numeric_dtype(df[t.time_column]):
            df[t.time_column] = pd.to_datetime((df[t.time_column] * 1000).round().astype("int64"), unit="ms", utc=True)
        for c in t.columns:
            if c.name in df.columns and c.nullable and c.kind == "float":
                df[c.name] = df[c.name].astype(object).where(df[c.name].notna(), None)
        self._run(f"insert into {t.name}", lambda: self.client.insert_df(t.name, df))
        return len(df)

    def segment_shipped(self, segment_id: str) -> bool:
        rows = self._run(
            "segment lookup",
            lambda: self.client.query(
                f"SELECT count() FROM {SEGMENTS_TABLE} WHERE segment_id = {{sid:String}}", parameters={"sid": segment_id}
            ).result_rows,
        )
        return bool(rows and rows[0][0])

    def record_segment(self, segment_id: str, target: str, rows: int) -> None:
        self._run(
            "segment ledger",
            lambda: self.client.insert(SEGMENTS_TABLE, [[segment_id, target, rows]],
                                       column_names=["segment_id", "target", "rows"]),
        )

    # -- reads ------------------------------------------------------------------------------------------------------
    def count(self, table: str | Table, **window) -> int:
        t = table if isinstance(table, Table) else table_named(table)
        where, params = _window(t, **window)
        rows = self._run("count", lambda: self.client.query(f"SELECT count() FROM {t.name}{where}",
                                                            parameters=params).result_rows)
        return int(rows[0][0])

    def frame(self, table: str | Table, columns: Sequence[str] | None = None, **window) -> pd.DataFrame:
        """Rows of a time/session window as a DataFrame with the contract's dtypes."""
        t = table if isinstance(table, Table) else table_named(table)
        sql, params = _select(t, columns, **window)
        df = self._run("read", lambda: self.client.query_df(sql, parameters=params))
        return apply_dtypes(t, df)

    def arrow_batches(self, table: str | Table, columns: Sequence[str] | None = None, **window) -> Iterator:
        """Stream a window as pyarrow RecordBatches (bounded memory for training on millions of rows)."""
        t = table if isinstance(table, Table) else table_named(table)
        sql, params = _select(t, columns, **window)
        try:
            with self.client.query_arrow_stream(sql, parameters=params) as stream:
                yield from stream
        except (StoreUnavailable, StoreRejected):
            raise
        except Exception as e:
            raise _classify(e, "arrow read") from e

    def query_df(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        return self._run("query", lambda: self.client.query_df(sql, parameters=parameters or {}))

    def sessions(self, table: str = "camera_ticks", among: Sequence[str] | None = None) -> list[str]:
        """The session ids in `table`, sorted; with `among`, only those of these ids that are already there (what a
        writer checks so a session is never logged twice: its rows and labels would count twice)."""
        t = table_named(table)
        where, params = (" WHERE session_id IN {s:Array(String)}", {"s": list(among)}) if among is not None else ("", {})
        rows = self._run("sessions", lambda: self.client.query(
            f"SELECT DISTINCT session_id FROM {t.name}{where} ORDER BY session_id", parameters=params).result_rows)
        return [r[0] for r in rows]


def _window(t: Table, sessions: Sequence[str] | None = None, start: Any = None, end: Any = None,
            synthetic: bool | None = None) -> tuple[str, dict]:
    clauses, params = [], {}
    if sessions is not None:
        clauses.append("session_id IN {sessions:Array(String)}")
        params["sessions"] = list(sessions)
    if start is not None:
        clauses.append(f"{t.time_column} >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC')")
        params["start"] = _millis(start)
    if end is not None:
        clauses.append(f"{t.time_column} < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')")
        params["end"] = _millis(end)
    if synthetic is not None:
        clauses.append("synthetic = {synthetic:Bool}")
        params["synthetic"] = synthetic
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _select(t: Table, columns: Sequence[str] | None, **window) -> tuple[str, dict]:
    cols = list(columns) if columns else t.column_names
    unknown = [c for c in cols if c not in t]
    if unknown:
        raise KeyError(f"{t.name} has no column(s) {unknown}")
    where, params = _window(t, **window)
    order = ", ".join(c for c in t.order_by if c in cols) or t.order_by[0]
    return f"SELECT {', '.join('`' + c + '`' for c in cols)} FROM {t.name}{where} ORDER BY {order}", params


def _millis(v: Any) -> int:
    if hasattr(v, "timestamp"):
        v = v.timestamp()
    return int(round(float(v) * 1000))


def apply_dtypes(t: Table, df: pd.DataFrame) -> pd.DataFrame:
    """Give a frame read from ClickHouse (or built by hand) the contract's pandas dtypes."""
    for name in df.columns:
        if name not in t:
            continue
        c = t[name]
        want = c.pandas_dtype
        if c.kind == "time":
            s = pd.to_datetime(df[name])
            df[name] = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        elif want != "object" and str(df[name].dtype) != want:
            df[name] = df[name].astype(want)
    return df


__all__ = ["FeatureStore", "StoreUnavailable", "StoreRejected", "apply_dtypes", "describe_dsn", "TABLES"]
