"""The feature contract: one place names the columns; DDL, dtypes and migrations derive from it."""

from __future__ import annotations

import dataclasses

import pytest

from features import migrations
from features.schema import CAMERA_TICKS, SCHEMA_VERSION, TABLES, Column, Table, scene_feature_names
from features.store import FeatureStore

ISSUE_FEATURES = {  # every analysis feature the Foundation issue names
    "people_count", "largest_person_area", "person_centrality", "motion_energy", "track_continuity", "track_age_s",
    "face_count", "largest_face_area", "speech_prob", "audio_dbfs", "keyword_hits", "asr_words_per_s",
    "vlm_interest", "vlm_age_s",
}


def test_contract_covers_the_issue_and_separates_program_state():
    features = set(scene_feature_names())
    assert ISSUE_FEATURES <= features
    # program state is logged but is not a scene feature (a ranker fed it learns "stay where you are")
    assert {"on_program", "since_on_program_s"} <= set(CAMERA_TICKS.names("state"))
    assert not features & set(CAMERA_TICKS.names("state"))
    for t in TABLES.values():
        assert {"schema_version", "session_id", "ts", "tick"} <= set(t.column_names)


def test_ddl_is_generated_from_the_schema(tmp_path):
    ddl = CAMERA_TICKS.ddl()
    assert "ENGINE = MergeTree" in ddl and "PARTITION BY toDate(ts)" in ddl
    assert "ORDER BY (session_id, ts, camera_id)" in ddl
    for c in CAMERA_TICKS.columns:
        assert f"`{c.name}` {c.ch_type}" in ddl
    with FeatureStore(f"chdb://{tmp_path / 'ch'}") as store:
        assert store.schema_version() == 0  # nothing there yet
        assert store.ensure_schema() == SCHEMA_VERSION
        assert store.ensure_schema() == SCHEMA_VERSION == store.schema_version()  # idempotent
        cols = store.query_df("SELECT name, type FROM system.columns WHERE table = 'camera_ticks'")
        assert dict(zip(cols["name"], cols["type"])) == {c.name: c.ch_type for c in CAMERA_TICKS.columns}


def test_pandas_dtypes_come_from_the_same_place():
    d = CAMERA_TICKS.pandas_dtypes()
    assert d["ts"] == "datetime64[ms, UTC]" and d["people_count"] == "uint16" and d["vlm_interest"] == "float32"
    assert d["camera_id"] == "string" and d["on_program"] == "bool"


def test_additive_migration_adds_only_new_columns(tmp_path, monkeypatch):
    with FeatureStore(f"chdb://{tmp_path / 'ch'}") as store:
        store.ensure_schema()  # database at v1
        v2 = dataclasses.replace(CAMERA_TICKS, columns=CAMERA_TICKS.columns + (
            Column("crowd_density", "Float32", "feature", "people per frame area", since=SCHEMA_VERSION + 1,
                   default=0.0),), _by_name={})
        assert migrations.migration_statements(v2, SCHEMA_VERSION + 1) == [
            "ALTER TABLE camera_ticks ADD COLUMN IF NOT EXISTS `crowd_density` Float32 DEFAULT 0.0"]
        monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
        monkeypatch.setattr(migrations, "TABLES", {**TABLES, "camera_ticks": v2})
        assert migrations.ensure_schema(store.client) == SCHEMA_VERSION + 1
        assert migrations.current_version(store.client) == SCHEMA_VERSION + 1
        cols = set(store.query_df("SELECT name FROM system.columns WHERE table='camera_ticks'")["name"])
        assert "crowd_density" in cols and "people_count" in cols

        # a database newer than the code is refused, not silently written to
        monkeypatch.setattr(migrations, "SCHEMA_VERSION", SCHEMA_VERSION)
        with pytest.raises(RuntimeError, match="newer than this code"):
            migrations.ensure_schema(store.client)


def test_a_feature_log_written_by_older_code_reads_with_the_newer_columns_null(tmp_path):
    """A data dir at v6 (before the settled speaker), read by a notebook before any writer upgraded it: the reader
    brings it to the current schema (helper trial: `load_ranking_data` failed with 'Identifier t.last_utterance_s
    cannot be resolved')."""
    import numpy as np

    from features.extract import RANKER_FEATURES
    from ranker.dataset import load_ranking_data
    from ranker.simulate import SimConfig, simulate

    v7 = [c.name for c in CAMERA_TICKS.columns if c.since == 7]
    with FeatureStore(f"chdb://{tmp_path / 'ch'}") as store:
        simulate(store, 1, SimConfig(duration_s=30), seed=3)
        store.client.command("ALTER TABLE camera_ticks " + ", ".join(f"DROP COLUMN `{c}`" for c in v7))
        sync = " SETTINGS mutations_sync = 1"
        store.client.command(f"ALTER TABLE {migrations.MIGRATIONS_TABLE} DELETE WHERE version = 7" + sync)
        store.client.command("ALTER TABLE camera_ticks UPDATE schema_version = 6 WHERE 1" + sync)
        assert store.schema_version() == 6
        data = load_ranking_data(store)
        assert migrations.current_version(store.client) == SCHEMA_VERSION and data.n_groups > 0
        assert all(np.isnan(data.X[:, RANKER_FEATURES.index(c)]).all() for c in v7)
        assert not np.isnan(data.X[:, RANKER_FEATURES.index("speech_run_s")]).any()


def test_table_definition_errors_are_caught_early():
    with pytest.raises(ValueError, match="unknown role"):
        Column("x", "Float32", "magic", "doc")
    with pytest.raises(ValueError, match="ORDER BY"):
        Table("t", "doc", (Column("a", "UInt8", "key", "doc"),), order_by=("b",))
