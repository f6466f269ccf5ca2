"""The stack outputs' keys: the contract read by the e2e suite, the smoke check and the rollback command."""

from __future__ import annotations

__all__ = ["OUTPUT_KEYS"]

# `pulumi stack output --json` of every stack has exactly these keys.
OUTPUT_KEYS: tuple[str, ...] = (
    "athena_database_name",
    "athena_workgroup_name",
    "ci_iam_role_arn",
    "stream_arn",
    "stream_name",
    "table_name",
    "function_name",
    "function_alias_name",
    "function_alias_arn",
    "bucket_name",
    "events_prefix",
    "quarantine_prefix",
    "athena_results_prefix",
    "failure_bucket_name",
    "glue_table_name",
    "log_group_name",
    "iterator_age_alarm_name",
    "region",
    "function_alias_version",
    "function_code_sha256",
    "athena_results_bucket_name",
    "curator_function_name",
    "curator_log_group_name",
    "backfill_state_machine_arn",
    "stack_name",
)
