"""IAM policy documents as pure functions of exact ARNs: no ``*`` action, no ``*`` resource where IAM allows less.

Components call these inside ``Output.all(...).apply`` to turn resolved ARNs into JSON; nothing here creates
resources, so the documents can be linted and asserted on directly in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "CURATED_TABLES",
    "ERASURE_AUDIT_PREFIX",
    "ERASURE_PROGRESS_PREFIX",
    "ERASURE_REQUESTS_PREFIX",
    "alarm_topic_key_policy",
    "alarm_topic_policy",
    "backfill_function_policy",
    "backfill_state_machine_policy",
    "ci_access_policy",
    "ci_trust_policy",
    "curator_policy",
    "glue_catalog_arn",
    "glue_table_arn",
    "lambda_trust_policy",
    "preview_access_policy",
    "processor_policy",
    "schedule_arn",
    "schedule_group_arn",
    "scheduler_invoke_policy",
    "scheduler_trust_policy",
    "state_machine_arn",
    "states_trust_policy",
    "tls_only_bucket_policy",
]

Document = dict[str, Any]
VERSION = "2012-10-17"


def _statement(sid: str, actions: Sequence[str], resources: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": list(resources), **extra}


def _objects(bucket_arn: str, *prefixes: str) -> list[str]:
    """ARNs of the objects under each key prefix (prefixes end with ``/``)."""
    return [f"{bucket_arn}/{prefix}*" for prefix in prefixes]


def _kms(sid: str, actions: Sequence[str], key_arns: Sequence[str | None]) -> list[dict[str, Any]]:
    keys = [key for key in key_arns if key]
    return [_statement(sid, actions, keys)] if keys else []


def glue_catalog_arn(database_arn: str) -> str:
    """``arn:aws:glue:<region>:<account>:catalog`` from a Glue database ARN of the same catalog."""
    head, _, _ = database_arn.partition(":database/")
    if not head.startswith("arn:") or head == database_arn:
        raise ValueError(f"not a Glue database ARN: {database_arn!r}")
    return f"{head}:catalog"


def lambda_trust_policy() -> Document:
    """Only the Lambda service may assume the stream processor's role."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "LambdaService",
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def processor_policy(
    *,
    stream_arn: str,
    bucket_arn: str,
    events_prefix: str,
    quarantine_prefix: str,
    failure_bucket_arn: str,
    log_group_arn: str,
    stream_kms_key_arn: str | None = None,
    bucket_kms_key_arn: str | None = None,
) -> Document:
    """What the stream processor may do: read its stream, write its prefixes, keep discarded batches, log.

    The Kinesis actions are the ones the Lambda developer guide lists for a Kinesis event source mapping's
    execution role. ``kinesis:SubscribeToShard`` acts on stream consumers (enhanced fan-out), so it is scoped to
    this stream's consumers; ``kinesis:ListStreams`` is not needed to create or run a mapping (the guide says so)
    and would need ``*``. For an S3 on-failure destination the guide lists ``s3:PutObject`` and ``s3:ListBucket``
    on the bucket; the bucket holds nothing else, so its objects are the exact resource.
    """
    statements = [
        _statement(
            "ReadChangeStream",
            [
                "kinesis:DescribeStream",
                "kinesis:DescribeStreamSummary",
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:ListShards",
            ],
            [stream_arn],
        ),
        _statement("ReadChangeStreamConsumers", ["kinesis:SubscribeToShard"], [f"{stream_arn}/consumer/*"]),
        _statement(
            "WriteEventsAndQuarantine", ["s3:PutObject"], _objects(bucket_arn, events_prefix, quarantine_prefix)
        ),
        _statement("ListFailedBatches", ["s3:ListBucket"], [failure_bucket_arn]),
        _statement("WriteFailedBatches", ["s3:PutObject"], [f"{failure_bucket_arn}/*"]),
        _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group_arn}:log-stream:*"]),
        *_kms("DecryptChangeStream", ["kms:Decrypt"], [stream_kms_key_arn]),
        *_kms("EncryptOutput", ["kms:Encrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn]),
    ]
    return {"Version": VERSION, "Statement": statements}


# Erasure requests and their audit records, at the data bucket's root beside the lake (curator.erasure_requests).
ERASURE_REQUESTS_PREFIX = "erasure/requests/"
ERASURE_AUDIT_PREFIX = "erasure/audit/"
ERASURE_PROGRESS_PREFIX = "erasure/progress/"  # the curator's tally of a request being carried out (counts only)
CURATED_TABLES = ("registration_changes", "registrations")
"""The Iceberg tables the curator writes (``curator.tables``), the only tables its role may create or update."""


def glue_table_arn(database_arn: str, table: str) -> str:
    """ARN of a Glue table from its database's ARN."""
    glue_catalog_arn(database_arn)  # validates the database ARN
    return f"{database_arn.replace(':database/', ':table/', 1)}/{table}"


def curator_policy(
    *,
    bucket_arn: str,
    events_prefix: str,
    curated_prefix: str,
    snapshot_prefix: str,
    quarantine_prefix: str,
    failure_bucket_arn: str,
    database_arn: str,
    log_group_arn: str,
    exports_prefix: str = "demand/exports/",
    tables: Sequence[str] = CURATED_TABLES,
    bucket_kms_key_arn: str | None = None,
) -> Document:
    """What the curator may do: read and delete raw objects, read the published snapshots, write the curated tables'
    files and their two Glue tables, and log.

    Curation only reads raw objects and (once a committed snapshot covers them) deletes them: it writes under the
    events prefix only for an erasure (below). Under the curated prefix pyiceberg writes data, manifests and
    metadata (large files as multipart uploads, abandoned on a failed write) and the curator removes files no kept
    snapshot references.
    ``s3:ListBucket`` is narrowed by ``s3:prefix`` to the three prefixes it reads: S3 answers a GET or HEAD of a
    missing key with 403 unless the caller may list it, and pyiceberg checks a new metadata file's absence.
    Glue: the tables are created on the first run and committed through ``UpdateTable`` (Glue checks the
    ``VersionId``); no ``DeleteTable``, no ``CreateDatabase`` (the program declares the database), and only the
    curated tables of the stack's database. Glue authorizes a table action on the catalog, the database and the
    table, so all three are named.

    Erasure (issue 17): the curator is the only role that rewrites or deletes what names a fan. At the start of a run
    it reads pending requests under ``erasure/requests/`` (and purges each once done), keeps a request's tally under
    ``erasure/progress/`` while carrying it out, and writes its audit under ``erasure/audit/``;
    it rewrites raw objects (under a new name, so ``PutObject`` on the events prefix), backfill snapshot objects,
    quarantine lines and the failure bucket's on-failure records without the erased fans, deleting each old object
    only once its new copy is durable. On the versioned buckets a delete leaves the old bytes as a noncurrent
    version, so it also lists versions (``s3:ListBucketVersions``, narrowed like ``s3:ListBucket``), reads old
    versions of the places it reads (``s3:GetObjectVersion``: raw, snapshots, quarantine, failed batches) and purges
    them (``s3:DeleteObjectVersion``: those places, the curated tables' deleted files, and the requests). Nothing
    else in the stack may delete a version. The backfill's DynamoDB export data files (under ``exports_prefix``) are
    overwritten in place without the erased fans (the export's manifest names them), so there the curator may read,
    put (a conditional overwrite), list, and read and purge versions, and never delete: a data file keeps its name
    until the whole export is purged, every version, once its snapshot holds it and ``exportRetentionDays`` have
    passed (``curator.exports``).

    Every ``PutObject`` outside the curated prefix is conditional, and the policy says so: on the events, snapshot
    and quarantine prefixes, the erasure audit and progress and the failure bucket only with an ``If-None-Match``
    header (``Null`` on ``s3:if-none-match``: a write-once create, never a replacement), on the exports prefix only
    with ``If-Match`` (``s3:if-match``: an overwrite of a data file as read, never a new file). The curated tables'
    files are written unconditionally (pyiceberg). Multipart uploads authorize their parts as ``s3:PutObject``
    without those headers, so outside the curated prefix the curator cannot use them (it never does).
    """
    tables_arns = [glue_table_arn(database_arn, table) for table in tables]
    listed_prefixes = [
        f"{events_prefix}*",
        f"{curated_prefix}*",
        f"{snapshot_prefix}*",
        f"{quarantine_prefix}*",
        f"{exports_prefix}*",
        "erasure/*",
    ]
    places = [
        *_objects(bucket_arn, events_prefix, snapshot_prefix, quarantine_prefix, exports_prefix),
        f"{failure_bucket_arn}/*",
    ]
    statements = [
        _statement(
            "ListRawCuratedAndSnapshots",
            ["s3:ListBucket"],
            [bucket_arn],
            Condition={"StringLike": {"s3:prefix": listed_prefixes}},
        ),
        _statement("ReadAndDeleteRawEvents", ["s3:DeleteObject", "s3:GetObject"], _objects(bucket_arn, events_prefix)),
        _statement("ReadPublishedSnapshots", ["s3:GetObject"], _objects(bucket_arn, snapshot_prefix)),
        _statement("EraseFromSnapshots", ["s3:DeleteObject"], _objects(bucket_arn, snapshot_prefix)),
        _statement("EraseFromQuarantine", ["s3:DeleteObject", "s3:GetObject"], _objects(bucket_arn, quarantine_prefix)),
        _statement("EraseFromExports", ["s3:GetObject"], _objects(bucket_arn, exports_prefix)),
        # A request is removed by purging its version (below): a plain delete would leave it readable.
        _statement("CarryOutErasureRequests", ["s3:GetObject"], _objects(bucket_arn, ERASURE_REQUESTS_PREFIX)),
        _statement("ReadErasureAudit", ["s3:GetObject"], _objects(bucket_arn, ERASURE_AUDIT_PREFIX)),
        _statement(
            "TrackErasureProgress", ["s3:DeleteObject", "s3:GetObject"], _objects(bucket_arn, ERASURE_PROGRESS_PREFIX)
        ),
        # Every object the curator puts outside the curated tables is conditional: a create (If-None-Match: *) of
        # a write-once object, or an overwrite (If-Match: the ETag read) of an export data file. Without the header
        # S3 would replace whatever is there; IAM refuses such a PutObject here.
        _statement(
            "CreateWriteOnceObjects",
            ["s3:PutObject"],
            [
                *_objects(
                    bucket_arn,
                    events_prefix,
                    snapshot_prefix,
                    quarantine_prefix,
                    ERASURE_AUDIT_PREFIX,
                    ERASURE_PROGRESS_PREFIX,
                ),
                f"{failure_bucket_arn}/*",
            ],
            Condition={"Null": {"s3:if-none-match": "false"}},
        ),
        _statement(
            "OverwriteExportDataFiles",
            ["s3:PutObject"],
            _objects(bucket_arn, exports_prefix),
            Condition={"Null": {"s3:if-match": "false"}},
        ),
        _statement("ListFailedBatches", ["s3:ListBucket"], [failure_bucket_arn]),
        _statement(
            "ListVersionsToErase",
            ["s3:ListBucketVersions"],
            [bucket_arn],
            Condition={"StringLike": {"s3:prefix": listed_prefixes}},
        ),
        _statement("ListFailedBatchVersions", ["s3:ListBucketVersions"], [failure_bucket_arn]),
        _statement("ReadOldVersionsToErase", ["s3:GetObjectVersion"], places),
        _statement(
            "PurgeErasedVersions",
            ["s3:DeleteObjectVersion"],
            [*places, *_objects(bucket_arn, curated_prefix, ERASURE_REQUESTS_PREFIX)],
        ),
        _statement("EraseFromFailedBatches", ["s3:DeleteObject", "s3:GetObject"], [f"{failure_bucket_arn}/*"]),
        # pyiceberg writes the tables' files without a condition (new names; large ones as multipart uploads).
        _statement(
            "WriteCuratedTables",
            ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"],
            _objects(bucket_arn, curated_prefix),
        ),
        _statement(
            "CommitCuratedTables",
            ["glue:CreateTable", "glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:UpdateTable"],
            [glue_catalog_arn(database_arn), database_arn, *tables_arns],
        ),
        _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group_arn}:log-stream:*"]),
        *_kms("ReadAndWriteEncryptedObjects", ["kms:Decrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn]),
    ]
    return {"Version": VERSION, "Statement": statements}


def backfill_function_policy(
    *,
    bucket_arn: str,
    exports_prefix: str,
    snapshot_prefix: str,
    quarantine_snapshots_prefix: str,
    log_group_arn: str,
    bucket_kms_key_arn: str | None = None,
) -> Document:
    """What the backfill function may do: read export data files, write (write-once) snapshots and their
    quarantine, and log.

    The function reads back what it wrote (the counts object, a Parquet footer on a re-run), so it may get what
    it may put. It also looks up objects that may not exist: the counts object of a data file not done yet, and on
    a re-run the quarantine object of an earlier attempt. S3 answers a GET of a missing key with 403, not 404,
    when the caller may not list that prefix, so ``s3:ListBucket`` is narrowed by ``s3:prefix`` to exactly the two
    prefixes it reads from; ``s3:AbortMultipartUpload`` lets it abandon an upload it fails.
    """
    statements = [
        _statement("ReadExportDataFiles", ["s3:GetObject"], _objects(bucket_arn, exports_prefix)),
        _statement(
            "ListSnapshots",
            ["s3:ListBucket"],
            [bucket_arn],
            # every prefix it reads back (maybe-missing) keys under: without the listing S3 answers 403, not 404
            Condition={"StringLike": {"s3:prefix": [f"{snapshot_prefix}*", f"{quarantine_snapshots_prefix}*"]}},
        ),
        _statement(
            "WriteSnapshotsAndQuarantine",
            ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
            _objects(bucket_arn, snapshot_prefix, quarantine_snapshots_prefix),
        ),
        _statement("WriteOwnLogs", ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{log_group_arn}:log-stream:*"]),
        *_kms("ReadAndWriteEncryptedObjects", ["kms:Decrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn]),
    ]
    return {"Version": VERSION, "Statement": statements}


def states_trust_policy(*, state_machine_arn: str) -> Document:
    """Only Step Functions, acting for this one state machine of this account, may assume its role."""
    account = state_machine_arn.split(":")[4]
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "StepFunctionsService",
                "Effect": "Allow",
                "Principal": {"Service": "states.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": state_machine_arn},
                },
            }
        ],
    }


def state_machine_arn(*, region: str, account_id: str, name: str, partition: str = "aws") -> str:
    """ARN of a Step Functions state machine (known before it exists, so its role can name it)."""
    return f"arn:{partition}:states:{region}:{account_id}:stateMachine:{name}"


def backfill_state_machine_policy(
    *,
    state_machine_arn: str,
    function_arn: str,
    bucket_arn: str,
    exports_prefix: str,
    results_bucket_arn: str,
    results_prefix: str,
    bucket_kms_key_arn: str | None = None,
) -> Document:
    """What the backfill state machine may do: run its Distributed Map and invoke the backfill function only.

    As the Step Functions guide lists for a Distributed Map ("IAM policies for using Distributed Map states"):
    ``states:StartExecution`` on the state machine itself (the map's child workflows), ``states:DescribeExecution``
    and ``states:StopExecution`` on its executions (``execution:<name>:*``) and on the map runs' child executions
    (``execution:<name>/*:*``), and ``states:RedriveExecution`` on those child executions so that redriving a
    failed execution can redrive its map run; ``s3:GetObject`` on the manifest the ``ItemReader`` reads
    (under the exports prefix); and for the ``ResultWriter``, ``s3:PutObject``, ``s3:GetObject``,
    ``s3:ListMultipartUploadParts`` and ``s3:AbortMultipartUpload`` under the results prefix. Logging to CloudWatch
    Logs uses the log-delivery actions, which AWS only authorises on ``*`` (the guide says so).
    """
    execution_arn = state_machine_arn.replace(":stateMachine:", ":execution:", 1)
    statements = [
        _statement("InvokeBackfillFunction", ["lambda:InvokeFunction"], [function_arn]),
        _statement("RunDistributedMap", ["states:StartExecution"], [state_machine_arn]),
        _statement(
            "FollowChildExecutions",
            ["states:DescribeExecution", "states:StopExecution"],
            [f"{execution_arn}:*", f"{execution_arn}/*:*"],
        ),
        _statement("RedriveMapRuns", ["states:RedriveExecution"], [f"{execution_arn}/*:*"]),
        _statement("ReadExportManifest", ["s3:GetObject"], _objects(bucket_arn, exports_prefix)),
        _statement(
            "WriteMapResults",
            ["s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"],
            _objects(results_bucket_arn, results_prefix),
        ),
        _statement(
            "DeliverExecutionLogs",
            [
                "logs:CreateLogDelivery",
                "logs:DeleteLogDelivery",
                "logs:DescribeLogGroups",
                "logs:DescribeResourcePolicies",
                "logs:GetLogDelivery",
                "logs:ListLogDeliveries",
                "logs:PutResourcePolicy",
                "logs:UpdateLogDelivery",
            ],
            ["*"],
        ),
        *_kms("ReadAndWriteEncryptedObjects", ["kms:Decrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn]),
    ]
    return {"Version": VERSION, "Statement": statements}


def _function_arn_parts(function_arn: str) -> list[str]:
    parts = function_arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda":
        raise ValueError(f"not a Lambda function ARN: {function_arn!r}")
    return parts


def schedule_arn(function_arn: str, schedule_name: str, group: str = "default") -> str:
    """ARN of an EventBridge Scheduler schedule in the function's region and account."""
    parts = _function_arn_parts(function_arn)
    return f"arn:{parts[1]}:scheduler:{parts[3]}:{parts[4]}:schedule/{group}/{schedule_name}"


def schedule_group_arn(function_arn: str, group: str) -> str:
    """ARN of an EventBridge Scheduler schedule group in the function's region and account."""
    parts = _function_arn_parts(function_arn)
    return f"arn:{parts[1]}:scheduler:{parts[3]}:{parts[4]}:schedule-group/{group}"


def scheduler_trust_policy(*, source_arn: str) -> Document:
    """Only EventBridge Scheduler, acting for schedules of this one schedule group of this account, may assume the
    role.

    The Scheduler user guide (confused deputy prevention) requires ``aws:SourceArn`` to be the schedule **group**'s
    ARN: Scheduler presents the group, so a condition on one schedule's ARN never matches and the role cannot be
    assumed at all. A schedule's ARN is refused here for that reason; the stack's own group keeps the trust narrow.
    """
    if ":schedule-group/" not in source_arn:
        raise ValueError(f"aws:SourceArn must be a schedule group ARN (...:schedule-group/<name>), got {source_arn!r}")
    account = source_arn.split(":")[4]
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "SchedulerService",
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account, "aws:SourceArn": source_arn}},
            }
        ],
    }


def scheduler_invoke_policy(*, function_arn: str, dead_letter_queue_arn: str | None = None) -> Document:
    """The schedule's role may invoke the curator function and, when the schedule has a dead-letter queue, send
    to that queue (Scheduler delivers an event it could not deliver to the target with the schedule's role)."""
    statements = [_statement("InvokeCurator", ["lambda:InvokeFunction"], [function_arn])]
    if dead_letter_queue_arn:
        statements.append(_statement("SendUndeliveredInvocations", ["sqs:SendMessage"], [dead_letter_queue_arn]))
    return {"Version": VERSION, "Statement": statements}


def ci_trust_policy(
    *,
    provider_arn: str,
    gitlab_url: str,
    project_path: str,
    main_branch_only: bool,
    issuer_url: str | None = None,
) -> Document:
    """GitLab CI of one project (and, when ``main_branch_only``, only its main branch) may assume the role.

    GitLab ID tokens carry ``sub = project_path:<group>/<project>:ref_type:<branch|tag>:ref:<name>`` and
    the audience configured in ``.gitlab-ci.yml`` (``id_tokens: ...: aud:``), here the GitLab URL. IAM names the
    condition keys after the provider, that is the tokens' issuer: ``issuer_url`` when GitLab issues them under
    another URL (``ci_id_tokens`` ``issuer_url`` of a private GitLab), else the GitLab URL.
    """
    if not urlparse(gitlab_url).netloc:
        raise ValueError(f"gitlab_url must be an absolute URL, got {gitlab_url!r}")
    issuer = issuer_url or gitlab_url
    parsed = urlparse(issuer)
    if not parsed.netloc:
        raise ValueError(f"issuer_url must be an absolute URL, got {issuer!r}")
    host = f"{parsed.netloc}{parsed.path.rstrip('/')}"
    subject = f"project_path:{project_path}:ref_type:branch:ref:main"
    subject_condition = (
        {"StringEquals": {f"{host}:aud": gitlab_url, f"{host}:sub": subject}}
        if main_branch_only
        else {
            "StringEquals": {f"{host}:aud": gitlab_url},
            "StringLike": {f"{host}:sub": f"project_path:{project_path}:ref_type:*:ref:*"},
        }
    )
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "GitLabCiOfThisProject",
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": subject_condition,
            }
        ],
    }


def ci_access_policy(
    *,
    table_arn: str,
    stream_arn: str,
    function_arn: str,
    bucket_arn: str,
    read_prefixes: Sequence[str],
    results_prefix: str,
    results_bucket_arn: str,
    workgroup_arn: str,
    database_arn: str,
    table_glue_arn: str,
    failure_bucket_arn: str,
    snapshot_table_glue_arn: str | None = None,
    curated_tables: Sequence[str] = (),
    log_group_arn: str,
    alarm_arns: Sequence[str],
    bucket_kms_key_arn: str | None = None,
) -> Document:
    """What GitLab CI needs after a deploy: the e2e suite, the smoke check and the alias rollback.

    Deploying itself stays with the accounts' existing deployment role (the replaced system's GitRunner).
    Once a snapshot is published, ``current_registrations`` reads the snapshot table (``<table>_snapshots``) and
    its objects: the caller passes that table's ARN and the snapshots prefix among ``read_prefixes``. The curated
    Iceberg tables (``curated_tables``, created by the curator in the same database) are read the same way: their
    Glue tables, and their data and metadata under the curated prefix the caller passes among ``read_prefixes``.
    """
    tables = [
        table_glue_arn,
        *([snapshot_table_glue_arn] if snapshot_table_glue_arn else []),
        *(glue_table_arn(database_arn, table) for table in curated_tables),
    ]
    return {
        "Version": VERSION,
        "Statement": [
            _statement(
                "WriteAndReadTestChanges",
                [
                    "dynamodb:BatchWriteItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:DescribeKinesisStreamingDestination",
                    "dynamodb:DescribeTable",
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:Query",
                ],
                [table_arn],
            ),
            _statement("DescribeStream", ["kinesis:DescribeStreamSummary"], [stream_arn]),
            _statement(
                "InspectAndRollBackFunction",
                [
                    "lambda:GetAlias",
                    "lambda:GetFunction",
                    "lambda:GetFunctionConfiguration",
                    "lambda:ListVersionsByFunction",
                    "lambda:UpdateAlias",
                ],
                [function_arn, f"{function_arn}:*"],
            ),
            _statement(
                "ListDataPrefixes",
                ["s3:GetBucketLocation", "s3:ListBucket"],
                [bucket_arn],
            ),
            _statement("ReadLake", ["s3:GetObject"], _objects(bucket_arn, *read_prefixes)),
            _statement(
                "AthenaResults",
                ["s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"],
                _objects(results_bucket_arn, results_prefix),
            ),
            _statement(
                "AthenaResultsBucket",
                ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                [results_bucket_arn],
            ),
            _statement(
                "QueryWithAthena",
                [
                    "athena:BatchGetNamedQuery",
                    "athena:GetNamedQuery",
                    "athena:GetQueryExecution",
                    "athena:GetQueryResults",
                    "athena:GetWorkGroup",
                    "athena:ListNamedQueries",
                    "athena:StartQueryExecution",
                    "athena:StopQueryExecution",
                ],
                [workgroup_arn],
            ),
            _statement(
                "ReadCatalog",
                ["glue:GetDatabase", "glue:GetPartitions", "glue:GetTable"],
                [glue_catalog_arn(database_arn), database_arn, *tables],
            ),
            _statement("ListFailedBatches", ["s3:ListBucket"], [failure_bucket_arn]),
            # make erase: file a request and read audit records, nothing else under erasure/ (only the curator
            # deletes or rewrites anything naming a fan); its --dry-run counts a fan's rows in the failed batches too,
            # and in the old (noncurrent) versions of what it reads, which it may list and read but never delete.
            _statement("FileErasureRequests", ["s3:PutObject"], _objects(bucket_arn, ERASURE_REQUESTS_PREFIX)),
            _statement("ReadErasureAudit", ["s3:GetObject"], _objects(bucket_arn, ERASURE_AUDIT_PREFIX)),
            _statement("ReadFailedBatches", ["s3:GetObject"], [f"{failure_bucket_arn}/*"]),
            _statement("ListOldVersions", ["s3:ListBucketVersions"], [bucket_arn, failure_bucket_arn]),
            _statement(
                "ReadOldVersions",
                ["s3:GetObjectVersion"],
                [*_objects(bucket_arn, *read_prefixes), f"{failure_bucket_arn}/*"],
            ),
            # CloudWatch Logs authorizes FilterLogEvents against the log group ARN with a trailing ":*"; the
            # log group's ``arn`` output has it stripped, so it is added back here.
            _statement("ReadFunctionLogs", ["logs:FilterLogEvents"], [f"{log_group_arn}:*"]),
            _statement("ReadAlarms", ["cloudwatch:DescribeAlarms"], list(alarm_arns)),
            # These two actions have no resource-level permissions in IAM: "*" is the only resource AWS accepts.
            _statement(
                "ListMappingsAndReadMetrics",
                ["cloudwatch:GetMetricStatistics", "lambda:ListEventSourceMappings"],
                ["*"],
            ),
            *_kms("DecryptLake", ["kms:Decrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn]),
        ],
    }


def preview_access_policy(
    *,
    state_bucket_arn: str,
    state_prefix: str,
    secrets_key_arn: str,
    data_prefixes: Sequence[str],
    data_bucket_patterns: Sequence[str] = (),
) -> Document:
    """What a ``pulumi preview --refresh`` needs on top of AWS's ``ReadOnlyAccess``, and what it must not read.

    The preview reads the stack's state (a DIY S3 backend: it checks for a lock but takes none) and decrypts the
    stack's secrets with the secrets provider's KMS key. ``ReadOnlyAccess`` also reads data (objects, items,
    records, query results, log events) that a preview never needs: those reads are denied explicitly, so branch
    code in a merge request pipeline cannot read the pipeline's data through this role. ``data_prefixes`` are key
    prefixes of the data bucket (any bucket); ``data_bucket_patterns`` are bucket names (``*`` allowed) whose every
    object is data: the failure bucket (whole change images of discarded batches) and the Athena results bucket.
    """
    denied_objects = [f"arn:aws:s3:::*/{prefix}*" for prefix in data_prefixes]
    denied_objects += [f"arn:aws:s3:::{bucket}/*" for bucket in data_bucket_patterns]
    state_objects = f"{state_bucket_arn}/{state_prefix}*" if state_prefix else f"{state_bucket_arn}/*"
    return {
        "Version": VERSION,
        "Statement": [
            _statement("ListPulumiState", ["s3:GetBucketLocation", "s3:ListBucket"], [state_bucket_arn]),
            _statement("ReadPulumiState", ["s3:GetObject"], [state_objects]),
            _statement("DecryptStackSecrets", ["kms:Decrypt", "kms:DescribeKey"], [secrets_key_arn]),
            {
                "Sid": "DenyDataReads",
                "Effect": "Deny",
                "Action": sorted(
                    [
                        "athena:GetQueryResults",
                        "dynamodb:BatchGetItem",
                        "dynamodb:GetItem",
                        "dynamodb:GetRecords",
                        "dynamodb:Query",
                        "dynamodb:Scan",
                        "kinesis:GetRecords",
                        "logs:FilterLogEvents",
                        "logs:GetLogEvents",
                        "logs:StartQuery",
                        "sqs:ReceiveMessage",
                    ]
                ),
                "Resource": ["*"],
            },
            {
                "Sid": "DenyDataObjectReads",
                "Effect": "Deny",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": denied_objects,
            },
        ],
    }


def tls_only_bucket_policy(bucket_arn: str) -> Document:
    """Deny every request to the bucket that does not use TLS."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def alarm_topic_key_policy(*, account_id: str) -> Document:
    """Key policy of the alarm topic's key: the account administers it (through IAM); CloudWatch may encrypt.

    CloudWatch needs ``kms:Decrypt`` and ``kms:GenerateDataKey*`` to publish to an encrypted topic; the topic policy
    (``alarm_topic_policy``) limits publishing to this stack's alarms.
    """
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AccountAdministersThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",  # in a key policy, "*" is this key
            },
            {
                "Sid": "CloudWatchAlarmsEncryptToTheTopic",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
            },
        ],
    }


def alarm_topic_policy(*, topic_arn: str, account_id: str, alarm_arns: str) -> Document:
    """Topic policy of the alarm topic: this account manages it; only this stack's alarms (a pattern) publish."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "AccountManagesTheTopic",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                "Action": [
                    "sns:GetTopicAttributes",
                    "sns:ListSubscriptionsByTopic",
                    "sns:Publish",
                    "sns:SetTopicAttributes",
                    "sns:Subscribe",
                ],
                "Resource": topic_arn,
            },
            {
                "Sid": "StackAlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": "sns:Publish",
                "Resource": topic_arn,
                "Condition": {
                    "ArnLike": {"aws:SourceArn": alarm_arns},
                    "StringEquals": {"aws:SourceAccount": account_id},
                },
            },
        ],
    }
