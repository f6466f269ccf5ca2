"""Physical names and S3 prefixes: the one place that decides what things are called in AWS."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CURATED_PREFIX",
    "FUNCTION_ALIAS",
    "NAME_LIMITS",
    "Naming",
    "Prefixes",
    "ResourceNames",
    "account_data_bucket_patterns",
    "alarm_name",
    "log_group_name",
    "prefixes",
]

# The alias the event source mapping invokes; rollback points it at an earlier published version.
FUNCTION_ALIAS = "live"

# The curated Iceberg tables' data and metadata (``curated/<table>/``): the analysts' product, beside the raw layout
# under ``demand/`` rather than inside it, so no rule or grant on the raw prefixes reaches the tables by accident.
CURATED_PREFIX = "curated/"
_ROLE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# AWS length limits of the names a stack creates (Lambda function and IAM role 64, S3 bucket 63, Lambda layer 140,
# CloudWatch alarm 255, Glue database/table and Athena workgroup 255/128, EventBridge Scheduler schedule 64).
NAME_LIMITS = {
    "function": 64,
    "failure_bucket": 63,
    "layer": 140,
    "curator_layer": 140,
    "alarm_prefix": 255 - len("-quarantine-rate"),  # the longest alarm role
    "glue_database": 255,
    "glue_table": 255,
    "workgroup": 128,
    "ci_role": 64,
    "results_bucket": 63,
    "alarm_topic": 256,
    "dashboard": 255,
    "curator_function": 64,
    "curator_schedule": 64,
    "curator_scheduler_role": 64,
    "curator_schedule_group": 64,
    "curator_dead_letter_queue": 80,
    "glue_snapshot_table": 255,
    "backfill_function": 64,
    "backfill_state_machine": 80,
    "backfill_state_machine_role": 64,
}
# Glue stores database and table names in lower case; anything else would show a diff on every preview.
_GLUE_NAME = re.compile(r"^[a-z0-9_]+$")
# S3 bucket names: lower case, digits and hyphens here (no dots, so virtual-hosted TLS certificates match).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Prefixes:
    """Key prefixes inside the data bucket (each ends with ``/``, none starts with one)."""

    root: str
    events: str
    quarantine: str
    athena_results: str
    artifacts: str
    exports: str = "demand/exports/"
    snapshots: str = "demand/snapshots/"
    curated: str = CURATED_PREFIX


def prefixes(root: str = "demand/") -> Prefixes:
    """The bucket layout under ``root``: events, quarantine, Athena results and deployment artifacts."""
    if not root.endswith("/") or root.startswith("/"):
        raise ValueError(f"prefix root must end with '/' and not start with one, got {root!r}")
    return Prefixes(
        root=root,
        events=f"{root}events/",
        quarantine=f"{root}quarantine/",
        athena_results=f"{root}athena-results/",
        artifacts=f"{root}artifacts/",
        exports=f"{root}exports/",
        snapshots=f"{root}snapshots/",
        curated=CURATED_PREFIX,
    )


def alarm_name(prefix: str, role: str) -> str:
    """``<prefix>-<role>``: one alarm of the processor, e.g. ``prd3292-qa1-demand-processor-iterator-age``."""
    return f"{prefix}-{role}"


def log_group_name(function_name: str) -> str:
    """The log group Lambda writes a function's logs to."""
    return f"/aws/lambda/{function_name}"


@dataclass(frozen=True)
class ResourceNames:
    """Physical names of the resources a stack creates; the program and the local sandbox both take them here."""

    function: str
    failure_bucket: str
    layer: str
    curator_layer: str
    alarm_prefix: str
    glue_database: str
    glue_table: str
    workgroup: str
    ci_role: str
    results_bucket: str
    alarm_topic: str
    dashboard: str
    curator_function: str
    curator_schedule: str
    curator_scheduler_role: str
    curator_schedule_group: str
    curator_dead_letter_queue: str
    glue_snapshot_table: str
    backfill_function: str
    backfill_state_machine: str
    backfill_state_machine_role: str

    def check(self) -> None:
        """Raise ValueError naming the first name AWS would reject (too long, or not lower-case for Glue)."""
        for field, limit in NAME_LIMITS.items():
            value = getattr(self, field)
            if len(value) > limit:
                raise ValueError(f"{field} name {value!r} is {len(value)} characters, AWS allows {limit}")
        for field in ("glue_database", "glue_table", "glue_snapshot_table", "workgroup"):
            value = getattr(self, field)
            if not _GLUE_NAME.match(value):
                raise ValueError(f"{field} name {value!r} must be lower-case letters, digits and underscores")
        if not _BUCKET_NAME.match(self.failure_bucket):
            raise ValueError(
                f"failure_bucket name {self.failure_bucket!r} must be lower-case letters, digits and hyphens"
            )

    @property
    def log_group(self) -> str:
        """The function's log group."""
        return log_group_name(self.function)

    @property
    def curator_log_group(self) -> str:
        """The curator function's log group."""
        return log_group_name(self.curator_function)

    @property
    def backfill_log_group(self) -> str:
        """The backfill function's log group."""
        return log_group_name(self.backfill_function)

    @property
    def backfill_state_machine_log_group(self) -> str:
        """The backfill state machine's log group (Step Functions' vended-logs convention)."""
        return f"/aws/vendedlogs/states/{self.backfill_state_machine}"

    @property
    def iterator_age_alarm(self) -> str:
        """The iterator-age alarm, the pipeline's main health signal."""
        return alarm_name(self.alarm_prefix, "iterator-age")


def account_data_bucket_patterns(product_code: str) -> tuple[str, str]:
    """Names (``*`` for environment and region) of the buckets whose every object is data, across an account's
    stacks: the failure bucket and the Athena results bucket, as ``Naming.resources`` names them."""
    prefix = f"{product_code.lower()}-*"
    return f"{prefix}-*-demand-processor-failures", f"{prefix}-*-demand-athena-results"


@dataclass(frozen=True)
class Naming:
    """Names of one stack's resources: ``prd3292-<env>-<role>``, snake_case for Glue and Athena.

    The seed environments' pre-existing names (stream, table, bucket) follow the same pattern; the
    ``seed_*`` methods spell it out so stack files for new environments can be derived and checked.
    """

    product_code: str
    environment: str
    region: str

    @property
    def prefix(self) -> str:
        """``prd3292-<env>``: the start of every physical name this stack creates."""
        return f"{self.product_code.lower()}-{self.environment}"

    def physical(self, role: str) -> str:
        """``prd3292-<env>-<role>`` for a kebab-case role such as ``demand-processor``."""
        if not _ROLE.match(role):
            raise ValueError(f"role must be kebab-case lower letters and digits, got {role!r}")
        return f"{self.prefix}-{role}"

    def snake(self, role: str) -> str:
        """``prd3292_<env>_<role>``: Glue databases/tables and Athena objects only accept snake_case."""
        return self.physical(role).replace("-", "_")

    def resources(self) -> ResourceNames:
        """The names of everything this stack creates."""
        function = self.physical("demand-processor")
        names = ResourceNames(
            function=function,
            # S3 bucket names are global: the region keeps two regions' stacks of one environment apart.
            failure_bucket=f"{self.prefix}-{self.region}-demand-processor-failures",
            layer=self.physical("demand-dependencies"),
            curator_layer=self.physical("demand-curator-dependencies"),
            alarm_prefix=function,
            glue_database=self.snake("demand"),
            glue_table=self.snake("demand-changes"),
            workgroup=self.snake("demand"),
            ci_role=self.physical("gitlab-ci"),
            # S3 names are global: the region keeps the stack's results bucket apart from other regions' stacks.
            results_bucket=f"{self.prefix}-{self.region}-demand-athena-results",
            alarm_topic=self.physical("demand-alarms"),
            dashboard=self.physical("demand-pipeline"),
            curator_function=self.physical("demand-curator"),
            curator_schedule=self.physical("demand-curation"),
            curator_scheduler_role=self.physical("demand-curation-scheduler"),
            curator_schedule_group=self.physical("demand-curation"),
            curator_dead_letter_queue=self.physical("demand-curation-undelivered"),
            glue_snapshot_table=f"{self.snake('demand-changes')}_snapshots",
            backfill_function=self.physical("demand-backfill"),
            backfill_state_machine=self.physical("demand-backfill"),
            backfill_state_machine_role=self.physical("demand-backfill-states"),
        )
        names.check()
        return names

    def seed_stream_name(self) -> str:
        """The Kinesis stream the replaced system used: ``prd3292-<env>-dmnd-table-stream``."""
        return self.physical("dmnd-table-stream")

    def seed_table_name(self) -> str:
        """The demand table: ``prd3292-<env>-<region>-demand-table``."""
        return f"{self.prefix}-{self.region}-demand-table"

    def seed_bucket_id(self) -> str:
        """The data bucket: ``prd3292.<env>.<region>.demand-capture.tmaws``."""
        return f"{self.product_code.lower()}.{self.environment}.{self.region}.demand-capture.tmaws"
