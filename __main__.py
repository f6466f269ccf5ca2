"""The demand pipeline, one stack: load settings, build the components, export the outputs."""

import pulumi

from components.alarm_topic import AlarmTopic, AlarmTopicArgs
from components.alarms import ProcessorAlarms, ProcessorAlarmsArgs
from components.artifacts import artifact
from components.athena import AthenaCatalog, AthenaCatalogArgs
from components.backfill import Backfill, BackfillArgs
from components.ci_access import CiAccess, CiAccessArgs
from components.curation import Curation, CurationArgs
from components.current_state import published_snapshot
from components.dashboard import DashboardMetric, PipelineDashboard, PipelineDashboardArgs
from components.failure_destination import METRIC_FILTER_ID, FailureDestination, FailureDestinationArgs
from components.flow_alarms import FlowAlarms, FlowAlarmsArgs
from components.function_environment import (
    METRICS_NAMESPACE,
    backfill_environment,
    curator_environment,
    curator_erasure_environment,
    lambda_environment,
)
from components.layer import DependencyLayer, DependencyLayerArgs
from components.naming import FUNCTION_ALIAS, prefixes
from components.outputs import OUTPUT_KEYS
from components.policies import CURATED_TABLES
from components.processor import StreamProcessor, StreamProcessorArgs
from components.provider import aws_provider
from components.query_results import QueryResults, QueryResultsArgs
from components.settings import erasure_salt, load_settings
from components.storage import DataLayout, DataLayoutArgs
from components.stream import ChangeStream, ChangeStreamArgs

settings = load_settings()
salt = erasure_salt(settings.stack)
names = settings.naming
resource_names = names.resources()
layout_prefixes = prefixes()
build = artifact(settings.artifact_dir)
aws_opts = pulumi.ResourceOptions(providers=[aws_provider("aws", settings)])

stream = ChangeStream(
    "stream",
    ChangeStreamArgs(
        settings.table_name,
        settings.stream_name,
        names.seed_stream_name(),
        settings.change_time_precision,
        settings.stream_kms_key_arn,
    ),
    aws_opts,
)
layout = DataLayout(
    "data",
    DataLayoutArgs(
        settings.bucket_id,
        settings.create_bucket,
        layout_prefixes,
        settings.athena_results_expiry_days,
        settings.bucket_kms_key_arn,
    ),
    aws_opts,
)
layer = DependencyLayer(
    "layer",
    DependencyLayerArgs(
        resource_names.layer,
        layout.bucket_name,
        layout_prefixes.artifacts,
        build.layer_zip,
        build.layer_digest,
    ),
    aws_opts,
)
failures = FailureDestination(
    "failures",
    FailureDestinationArgs(
        bucket_name=resource_names.failure_bucket,
        retention_days=settings.failure_retention_days,
        versioning=settings.failure_bucket_versioning,
        kms_key_arn=settings.bucket_kms_key_arn,
    ),
    aws_opts,
)
processor = StreamProcessor(
    "processor",
    StreamProcessorArgs(
        function_name=resource_names.function,
        failure_bucket_arn=failures.bucket_arn,
        stream_arn=stream.stream_arn,
        bucket_arn=layout.bucket_arn,
        events_prefix=layout_prefixes.events,
        quarantine_prefix=layout_prefixes.quarantine,
        layer_arn=layer.layer_arn,
        environment=lambda_environment(settings, settings.bucket_id, layout_prefixes),
        memory_mb=settings.lambda_memory_mb,
        timeout_seconds=settings.lambda_timeout_seconds,
        batch_size=settings.batch_size,
        batching_window_seconds=settings.batching_window_seconds,
        parallelization_factor=settings.parallelization_factor,
        max_retry_attempts=settings.max_retry_attempts,
        max_record_age_seconds=settings.max_record_age_seconds,
        log_retention_days=settings.log_retention_days,
        function_zip=build.function_zip,
        function_digest=build.function_digest,
        log_destination_arn=settings.log_destination_arn,
        stream_kms_key_arn=stream.kms_key_arn,
        bucket_kms_key_arn=settings.bucket_kms_key_arn,
        starting_position=settings.stream_starting_position,
        starting_position_timestamp=settings.stream_start_timestamp,
        central_logs_warning=settings.central_logs_warning,
    ),
    aws_opts,
)
alarm_topic = AlarmTopic(
    "alarm-topic",
    AlarmTopicArgs(
        topic_name=resource_names.alarm_topic,
        existing_topic_arn=settings.alarm_topic_arn,
        subscriptions=settings.alarm_subscriptions,
        region=settings.region,
        # Every alarm: prd3292-<env>-demand-processor-*, -demand-curator-*, -demand-curation-* and -demand-backfill-*.
        alarm_name_prefix=names.physical("demand"),
    ),
    aws_opts,
)
alarms = ProcessorAlarms(
    "alarms",
    ProcessorAlarmsArgs(
        name_prefix=resource_names.alarm_prefix,
        function_name=processor.function_name,
        alias_name=FUNCTION_ALIAS,
        failure_bucket_name=failures.bucket_name,
        failure_metric_filter_id=failures.metric_filter_id,
        iterator_age_seconds=settings.iterator_age_alarm_seconds,
        errors_threshold=settings.errors_alarm_threshold,
        throttles_threshold=settings.throttles_alarm_threshold,
        failed_batches_threshold=settings.failed_batches_alarm_threshold,
        topic_arn=alarm_topic.topic_arn,
    ),
    aws_opts,
)
backfill = Backfill(
    "backfill",
    BackfillArgs(
        function_name=resource_names.backfill_function,
        state_machine_name=resource_names.backfill_state_machine,
        state_machine_role_name=resource_names.backfill_state_machine_role,
        state_machine_log_group_name=resource_names.backfill_state_machine_log_group,
        region=settings.region,
        bucket_name=settings.bucket_id,
        bucket_arn=layout.bucket_arn,
        exports_prefix=layout_prefixes.exports,
        snapshot_prefix=layout_prefixes.snapshots,
        quarantine_prefix=layout_prefixes.quarantine,
        layer_arn=layer.layer_arn,
        environment=backfill_environment(settings, settings.bucket_id, layout_prefixes),
        max_concurrency=settings.backfill_max_concurrency,
        log_retention_days=settings.log_retention_days,
        function_zip=build.function_zip,
        function_digest=build.function_digest,
        bucket_kms_key_arn=settings.bucket_kms_key_arn,
        topic_arn=alarm_topic.topic_arn,
    ),
    aws_opts,
)
flow_alarms = FlowAlarms(
    "flow-alarms",
    FlowAlarmsArgs(
        name_prefix=resource_names.alarm_prefix,
        stream_name=stream.stream_name,
        function_name=processor.function_name,
        alias_name=FUNCTION_ALIAS,
        metrics_namespace=METRICS_NAMESPACE,
        service_name=resource_names.function,
        quarantine_rate_percent=settings.quarantine_rate_alarm_percent,
        topic_arn=alarm_topic.topic_arn,
    ),
    aws_opts,
)
results = QueryResults(
    "athena-results",
    QueryResultsArgs(
        resource_names.results_bucket, layout_prefixes.athena_results, settings.athena_results_expiry_days
    ),
    aws_opts,
)
athena = AthenaCatalog(
    "athena",
    AthenaCatalogArgs(
        database_name=resource_names.glue_database,
        table_name=resource_names.glue_table,
        workgroup_name=resource_names.workgroup,
        bucket_name=settings.bucket_id,
        events_prefix=layout_prefixes.events,
        results_prefix=layout_prefixes.athena_results,
        bytes_scanned_cutoff=settings.athena_bytes_scanned_cutoff,
        results_bucket_name=resource_names.results_bucket,
        query_window_days=settings.athena_query_window_days,
        kms_key_arn=settings.bucket_kms_key_arn,
        snapshots_prefix=layout_prefixes.snapshots,
        snapshot=published_snapshot(settings.snapshot_export_id, settings.snapshot_export_time),
    ),
    pulumi.ResourceOptions.merge(aws_opts, pulumi.ResourceOptions(depends_on=[results])),
)
curator_layer = DependencyLayer(
    "curator-layer",
    DependencyLayerArgs(
        resource_names.curator_layer,
        layout.bucket_name,
        layout_prefixes.artifacts,
        build.curator_layer_zip,
        build.curator_layer_digest,
        description="Runtime dependencies of the curator (pyiceberg, pyiceberg-core, pyarrow, aws-lambda-powertools).",
    ),
    aws_opts,
)
curation = Curation(
    "curation",
    CurationArgs(
        function_name=resource_names.curator_function,
        schedule_name=resource_names.curator_schedule,
        scheduler_role_name=resource_names.curator_scheduler_role,
        schedule_group_name=resource_names.curator_schedule_group,
        dead_letter_queue_name=resource_names.curator_dead_letter_queue,
        bucket_arn=layout.bucket_arn,
        events_prefix=layout_prefixes.events,
        curated_prefix=layout_prefixes.curated,
        snapshot_prefix=layout_prefixes.snapshots,
        quarantine_prefix=layout_prefixes.quarantine,
        exports_prefix=layout_prefixes.exports,
        failure_bucket_arn=failures.bucket_arn,
        database_arn=athena.database_arn,
        layer_arn=curator_layer.layer_arn,
        environment={
            **curator_environment(settings, settings.bucket_id, layout_prefixes, resource_names.glue_database),
            **curator_erasure_environment(
                resource_names.failure_bucket, layout_prefixes, settings.erasure_rows_per_run
            ),
        },
        erasure_salt=salt,
        erasure_deadline_days=settings.erasure_deadline_days,
        memory_mb=settings.curation_memory_mb,
        timeout_seconds=settings.curation_timeout_seconds,
        interval_minutes=settings.curation_interval_minutes,
        log_retention_days=settings.log_retention_days,
        function_zip=build.curator_zip,
        errors_threshold=settings.errors_alarm_threshold,
        function_digest=build.curator_digest,
        bucket_kms_key_arn=settings.bucket_kms_key_arn,
        topic_arn=alarm_topic.topic_arn,
    ),
    aws_opts,
)
all_alarm_arns = pulumi.Output.all(
    alarms.alarm_arns,
    flow_alarms.alarm_arns,
    curation.errors_alarm_arn,
    curation.schedule_alarm_arn,
    curation.erasure_alarm_arn,
    backfill.failed_executions_alarm_arn,
).apply(lambda groups: [*groups[0], *groups[1], *groups[2:]])
PipelineDashboard(
    "dashboard",
    PipelineDashboardArgs(
        dashboard_name=resource_names.dashboard,
        region=settings.region,
        stream_name=settings.stream_name or names.seed_stream_name(),
        function_name=resource_names.function,
        metrics_namespace=METRICS_NAMESPACE,
        service_name=resource_names.function,
        # Discarded batches: the failure bucket's PUTs under Lambda's on-failure key prefix.
        failure_arrivals=DashboardMetric(
            "AWS/S3",
            "PutRequests",
            {"BucketName": resource_names.failure_bucket, "FilterId": METRIC_FILTER_ID},
            "Sum",
            "Batches given up",
        ),
        alarm_arns=all_alarm_arns,
    ),
    aws_opts,
)
ci = CiAccess(
    "ci",
    CiAccessArgs(
        role_name=resource_names.ci_role,
        gitlab_url=settings.gitlab_url,
        issuer_url=settings.oidc_issuer_url,
        project_path=settings.gitlab_project_path,
        main_branch_only=settings.ci_main_branch_only,
        table_arn=stream.table_arn,
        stream_arn=stream.stream_arn,
        function_arn=processor.function_arn,
        bucket_arn=layout.bucket_arn,
        # the snapshots too: once a snapshot is published, current_registrations reads its table; and the curated
        # tables' data and metadata; and the exports, which make erase's dry run counts
        read_prefixes=(
            layout_prefixes.events,
            layout_prefixes.quarantine,
            layout_prefixes.snapshots,
            layout_prefixes.curated,
            layout_prefixes.exports,
        ),
        results_prefix=layout_prefixes.athena_results,
        results_bucket_arn=results.bucket_arn,
        workgroup_arn=athena.workgroup_arn,
        database_arn=athena.database_arn,
        table_glue_arn=athena.table_arn,
        snapshot_table_glue_arn=athena.snapshot_table_arn,
        failure_bucket_arn=failures.bucket_arn,
        log_group_arn=processor.log_group_arn,
        alarm_arns=all_alarm_arns,
        bucket_kms_key_arn=settings.bucket_kms_key_arn,
        curated_tables=CURATED_TABLES,
    ),
    aws_opts,
)

outputs: dict[str, pulumi.Input[str]] = {
    "athena_database_name": athena.database_name,
    "athena_workgroup_name": athena.workgroup_name,
    "ci_iam_role_arn": ci.role_arn,
    "stream_arn": stream.stream_arn,
    "stream_name": stream.stream_name,
    "table_name": stream.table_name,
    "function_name": processor.function_name,
    "function_alias_name": processor.alias_name,
    "function_alias_arn": processor.alias_arn,
    "bucket_name": layout.bucket_name,
    "events_prefix": layout.events_prefix,
    "quarantine_prefix": layout.quarantine_prefix,
    "athena_results_prefix": layout.athena_results_prefix,
    "failure_bucket_name": failures.bucket_name,
    "curator_function_name": curation.function_name,
    "curator_log_group_name": curation.log_group_name,
    "backfill_state_machine_arn": backfill.state_machine_arn,
    "glue_table_name": athena.table_name,
    "log_group_name": processor.log_group_name,
    "iterator_age_alarm_name": alarms.iterator_age_alarm_name,
    "region": settings.region,
    "function_alias_version": processor.function_version,
    "function_code_sha256": processor.code_sha256,
    "athena_results_bucket_name": results.bucket_name,
    "stack_name": settings.stack,
}
for key in OUTPUT_KEYS:
    pulumi.export(key, outputs[key])
