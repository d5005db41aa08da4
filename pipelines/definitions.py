"""The one Dagster `Definitions` of AI-OBS: `dagster dev -m pipelines.definitions` (DAGSTER_HOME = the data dir's
dagster/, with the project's dagster.yaml: sqlite storage, telemetry off)."""


from dagster import (AssetSelection, DefaultScheduleStatus, DefaultSensorStatus, Definitions, RunRequest,
                     ScheduleDefinition, SensorEvaluationContext, SkipReason, build_schedule_from_partitioned_job,
                     define_asset_job, sensor)

from runtime.settings import load_settings

from . import assets
from .resources import ClickHouseResource, default_resources

RANKER_ASSETS = [assets.training_dataset, assets.real_media_set, assets.ranker_study, assets.ranker_model, assets.ranker_evaluation,
                 assets.ranker_registration]
CHECKS = [assets.dataset_row_counts, assets.dataset_null_rates, assets.dataset_schema_version,
          assets.dataset_label_balance]

retrain_ranker = define_asset_job(
    "retrain_ranker", selection=AssetSelection.assets(*RANKER_ASSETS),
    description="dataset -> study -> model -> evaluation -> registration (gated promotion)")
ab_evaluation = define_asset_job("ab_evaluation", selection=AssetSelection.assets(assets.feature_log_ingest,
                                                                                   assets.ab_report),
                                 partitions_def=assets.DAILY,
                                 description="ship the day's spool, then its A/B report (and the guarded promotion "
                                             "/ rollback)")
ingest_feature_log = define_asset_job("ingest_feature_log", selection=AssetSelection.assets(assets.feature_log_ingest),
                                      partitions_def=assets.DAILY)

nightly_retrain = ScheduleDefinition(job=retrain_ranker, cron_schedule="0 3 * * *", execution_timezone="UTC",
                                     default_status=DefaultScheduleStatus.RUNNING)

# yesterday's A/B evidence (the last complete daily partition), every morning before the retrain
nightly_ab = build_schedule_from_partitioned_job(ab_evaluation, name="nightly_ab_report", hour_of_day=2,
                                                 minute_of_hour=30, default_status=DefaultScheduleStatus.RUNNING)

NEW_LABELS_THRESHOLD = 200  # human cut points since the last triggered run


@sensor(job=retrain_ranker, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def new_labels_sensor(context: SensorEvaluationContext, clickhouse: ClickHouseResource):
    """Start the retraining early when enough new human labels (override events) have arrived."""
    with clickhouse.store() as store:
        total = int(store.count("overrides"))
    seen = int(context.cursor or 0)
    if total - seen < NEW_LABELS_THRESHOLD:
        return SkipReason(f"{total - seen} new labels since the last run (< {NEW_LABELS_THRESHOLD})")
    context.update_cursor(str(total))
    return RunRequest(run_key=f"labels-{total}", tags={"trigger": "new_labels", "labels": str(total)})


def build_definitions(settings=None) -> Definitions:
    settings = settings or load_settings()
    settings.ensure_dirs()
    return Definitions(
        assets=[assets.feature_log_ingest, *RANKER_ASSETS, assets.ab_report],
        asset_checks=CHECKS,
        jobs=[retrain_ranker, ingest_feature_log, ab_evaluation],
        schedules=[nightly_retrain, nightly_ab],
        sensors=[new_labels_sensor],
        resources=default_resources(settings),
    )


defs = build_definitions()
