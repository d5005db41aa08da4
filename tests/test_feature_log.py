"""The feature log never loses a valid row: spool -> shipper -> ClickHouse (chDB, the real engine), with faults."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from features.schema import CAMERA_TICKS, DECISIONS, OVERRIDES, SchemaViolation
from features.shipper import SegmentShipper
from features.spool import FeatureLog, SpoolLocked, SpoolWriter, split_segment
from features.store import FeatureStore, StoreUnavailable

T0 = 1_795_000_000.0


def tick_row(i: int, session: str = "s1", camera: str | None = None) -> dict:
    return {
        "session_id": session, "room": "studio", "ts": T0 + i * 0.2, "tick": i // 5,
        "camera_id": camera or f"cam{i % 5}", "people_count": i % 4, "largest_person_area": 0.1 * (i % 3),
        "motion_energy": 0.5, "speech_prob": 0.9 if i % 7 == 0 else 0.0, "audio_dbfs": -30.0,
        "vlm_interest": None if i % 2 else 3.0, "degraded": {"vlm": "no model configured"} if i % 2 else {},
        "on_program": i % 5 == 0, "score": 0.25,
    }


def write_rows(spool, n: int, start: int = 0, **kw) -> int:
    with SpoolWriter(spool, CAMERA_TICKS, **kw) as w:
        for i in range(start, start + n):
            w.append(tick_row(i))
    return n


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(f"chdb://{tmp_path / 'ch'}")
    yield s
    s.close()


def test_round_trip_all_tables_with_contract_dtypes(tmp_path, store):
    spool = tmp_path / "spool"
    with FeatureLog(spool, [CAMERA_TICKS, DECISIONS, OVERRIDES], max_rows=7) as log_:
        for i in range(50):
            log_.append("camera_ticks", tick_row(i))
        log_.append("decisions", {"session_id": "s1", "ts": T0, "tick": 0, "program_camera": "cam0", "cut": True,
                                  "to_camera": "cam0", "reason": "start", "detail": "first camera"})
        log_.append("overrides", {"session_id": "s1", "ts": T0 + 1, "tick": 5, "operator": "ann", "action": "lock",
                                  "camera_id": "cam3", "timeout_s": 10.0})
    report = SegmentShipper(spool, store).ship_once()
    assert report.error is None and report.rows == 52 and report.pending == 0
    assert store.count("camera_ticks") == 50 and store.count("decisions") == 1 and store.count("overrides") == 1

    df = store.frame("camera_ticks", sessions=["s1"], start=T0 + 2, end=T0 + 4)  # 2 s window = ticks 10..19
    assert len(df) == 10
    assert str(df["ts"].dtype) == "datetime64[ms, UTC]"
    assert str(df["people_count"].dtype) == "uint16" and str(df["speech_prob"].dtype) == "float32"
    assert df["vlm_interest"].isna().sum() == 5  # NULL stays NULL
    assert df.loc[df["vlm_interest"].isna(), "degraded"].map(lambda m: m.get("vlm")).eq("no model configured").all()
    ov = store.frame("overrides")
    assert ov.loc[0, "action"] == "lock" and ov.loc[0, "camera_id"] == "cam3"

    batches = list(store.arrow_batches("camera_ticks", columns=["session_id", "tick", "camera_id", "score"]))
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == 50


def test_schema_violation_is_rejected_at_write_and_nothing_else_is_lost(tmp_path, store):
    spool = tmp_path / "spool"
    with SpoolWriter(spool, CAMERA_TICKS) as w:
        w.append(tick_row(0))
        bad = [
            ({**tick_row(1), "people_count": "two"}, "people_count: expected an integer"),
            ({**tick_row(2), "bogus": 1}, "unknown column"),
            ({k: v for k, v in tick_row(3).items() if k != "camera_id"}, "camera_id: required column is missing"),
            ({**tick_row(4), "motion_energy": float("nan")}, "non-finite"),
            ({**tick_row(5), "people_count": -1}, "negative"),
        ]
        for row, msg in bad:
            with pytest.raises(SchemaViolation, match=msg):
                w.append(row)
        with pytest.raises(SchemaViolation):  # extend is all-or-nothing
            w.extend([tick_row(6), {**tick_row(7), "on_program": "yes"}])
        w.append(tick_row(8))
    with pytest.raises(SchemaViolation, match="not one of"):
        OVERRIDES.validate({"session_id": "s", "ts": T0, "tick": 0, "action": "steal"})
    SegmentShipper(spool, store).ship_once()
    assert store.count("camera_ticks") == 2


def test_clickhouse_unreachable_spool_grows_then_drains(tmp_path):
    spool = tmp_path / "spool"
    dead = FeatureStore("http://127.0.0.1:1", connect_timeout=1)  # nothing listens on port 1
    total = 0
    for k in range(3):
        total += write_rows(spool, 40, start=total, max_rows=15)
        r = SegmentShipper(spool, dead).ship_once()
        assert r.error and "unreachable" in r.error
        assert r.pending == len(list((spool / "camera_ticks").glob("*.seg"))) > 0
    assert r.pending == 9  # 3 x ceil(40/15): the spool grew, nothing shipped, nothing dropped

    # the embedded engine is also "unreachable" while another process holds its path
    path = tmp_path / "ch"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import clickhouse_connect, sys, time
        c = clickhouse_connect.get_client(dsn="chdb://{path}")
        c.query("SELECT 1"); print("open", flush=True); sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        locked = FeatureStore(f"chdb://{path}")
        r = SegmentShipper(spool, locked).ship_once()
        assert r.error and r.pending == 9
        locked.close()
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)

    with FeatureStore(f"chdb://{path}") as live:  # recovery: it drains
        r = SegmentShipper(spool, live).ship_once()
        assert r.error is None and r.pending == 0 and r.rows == total
        assert live.count("camera_ticks") == total


def test_writer_killed_mid_segment_resumes_and_drops_only_the_torn_line(tmp_path, store):
    spool = tmp_path / "spool"
    child = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from features.schema import CAMERA_TICKS
        from features.spool import SpoolWriter
        from tests.test_feature_log import tick_row
        w = SpoolWriter({str(spool)!r}, CAMERA_TICKS, max_rows=30, max_age_s=3600)
        for i in range(75):          # 2 sealed segments + 15 rows in the open one
            w.append(tick_row(i))
        os.write(w._fd, b'{{"session_id": "s1", "ts": 17950')   # a row torn mid-write
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", child], cwd=os.getcwd())
    assert p.returncode == -signal.SIGKILL
    assert len(list((spool / "camera_ticks").glob("*.open"))) == 1

    with SpoolWriter(spool, CAMERA_TICKS) as w:  # restart: recovery seals the dead writer's segment
        assert len(w.recovered) == 1
        for i in range(75, 80):
            w.append(tick_row(i))
    r = SegmentShipper(spool, store).ship_once()
    assert r.quarantined == [] and r.rows == 80
    assert store.count("camera_ticks") == 80


def test_corrupt_segment_is_quarantined_and_the_rest_ships(tmp_path, store, caplog):
    spool = tmp_path / "spool"
    write_rows(spool, 90, max_rows=30)
    segs = sorted((spool / "camera_ticks").glob("*.seg"))
    assert len(segs) == 3
    data = bytearray(segs[1].read_bytes())
    lines = bytes(data).split(b"\n")
    start = len(lines[0]) + 1 + len(lines[1]) + 1  # third line of the middle segment
    data[start + 2:start + 12] = b"\x00garbage\xff"
    segs[1].write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        r = SegmentShipper(spool, store).ship_once()
    assert r.quarantined == [segs[1].name] and r.rows_dropped == 1
    assert store.count("camera_ticks") == 89  # every readable row, the mangled one excepted
    q = spool / "camera_ticks" / "quarantine"
    assert (q / segs[1].name).is_file()
    assert "checksum mismatch" in (q / (segs[1].name + ".reason")).read_text()
    assert any("quarantined segment" in m and segs[1].name in m for m in caplog.messages)


def test_retry_after_lost_acknowledgement_cannot_duplicate(tmp_path, store):
    spool = tmp_path / "spool"
    write_rows(spool, 40, max_rows=20)
    segs = sorted((spool / "camera_ticks").glob("*.seg"))
    # 1) the insert reached ClickHouse but the shipper died before the ledger/local mark
    body, _ = split_segment(segs[0].read_bytes())
    store.ensure_schema()
    store.insert_json_rows(CAMERA_TICKS, body, dedup_token="camera_ticks/" + segs[0].name.split(".")[0])
    # 2) a segment whose local mark was lost after the ledger was written: ship, then put the file back
    keep = segs[1].read_bytes()
    r = SegmentShipper(spool, store).ship_once()
    assert r.rows == 40
    segs[1].write_bytes(keep)
    r = SegmentShipper(spool, store).ship_once()
    assert r.segments == 0 and r.pending == 0
    assert store.count("camera_ticks") == 40


def test_one_writer_per_spool_and_shipped_segments_kept_when_asked(tmp_path, store):
    spool = tmp_path / "spool"
    w = SpoolWriter(spool, CAMERA_TICKS)
    with pytest.raises(SpoolLocked):
        SpoolWriter(spool, CAMERA_TICKS)
    w.append(tick_row(0))
    w.close()
    SegmentShipper(spool, store, keep_shipped=True).ship_once()
    assert len(list((spool / "camera_ticks" / "shipped").glob("*.seg"))) == 1


def test_time_based_rotation_makes_rows_shippable(tmp_path):
    spool = tmp_path / "spool"
    with SpoolWriter(spool, CAMERA_TICKS, max_age_s=0.05) as w:
        w.append(tick_row(0))
        time.sleep(0.06)
        assert w.maybe_rotate() is not None
        assert len(list((spool / "camera_ticks").glob("*.seg"))) == 1


def test_unreachable_reader_gives_a_clear_error():
    with pytest.raises(StoreUnavailable, match="unreachable|cannot open"):
        FeatureStore("http://127.0.0.1:1", connect_timeout=1).count("camera_ticks")
    with pytest.raises(StoreUnavailable, match="unsupported ClickHouse DSN"):
        FeatureStore("postgres://x").ping()
