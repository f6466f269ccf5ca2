"""Each deployed component on its own, against the target TEST_ENV names (the local AWS by default).

Locally the function and its event source mapping are the in-process handler and the local mapping, so those
checks look at what the local AWS runs; everything else is checked through the same AWS APIs everywhere.
"""

from __future__ import annotations

import inspect

import pytest

from components.catalog import ENGINE_VERSION, PARTITION_KEYS, named_queries
from components.function_environment import lambda_environment
from components.naming import FUNCTION_ALIAS, prefixes
from pipeline.schema import glue_columns
from sandbox.mapping import MappingConfig
from sandbox.targets import LocalTarget, Target

pytestmark = pytest.mark.integration

HANDLER = "pipeline.handler.handler"


def test_function_and_live_alias(target: Target):
    outputs, settings = target.outputs, target.settings
    environment = lambda_environment(settings, outputs.bucket_name, prefixes())
    assert outputs.function_alias_name == FUNCTION_ALIAS
    assert outputs.function_alias_arn.endswith(f":function:{outputs.function_name}:{FUNCTION_ALIAS}")
    if isinstance(target, LocalTarget):
        function = target.pipeline.mapping.function
        assert f"{function.__module__}.{function.__qualname__}" == HANDLER
        assert target.pipeline.mapping.function_arn == outputs.function_alias_arn
        # What its cold start read from the environment (the handler is wrapped by Powertools' metrics decorator).
        handler_settings = inspect.unwrap(function).__globals__["SETTINGS"]
        assert handler_settings.output_bucket == environment["OUTPUT_BUCKET"]
        assert handler_settings.output_prefix == environment["OUTPUT_PREFIX"] == outputs.events_prefix
        assert handler_settings.quarantine_prefix == environment["QUARANTINE_PREFIX"] == outputs.quarantine_prefix
        assert handler_settings.change_time_precision == settings.change_time_precision
        return
    lambda_client = target.client("lambda")
    alias = lambda_client.get_alias(FunctionName=outputs.function_name, Name=FUNCTION_ALIAS)
    assert alias["AliasArn"] == outputs.function_alias_arn
    assert alias["FunctionVersion"] != "$LATEST", "the alias points at a published version"
    function = lambda_client.get_function_configuration(FunctionName=outputs.function_alias_arn)
    assert function["Handler"] == HANDLER
    assert function["Runtime"] == "python3.12"
    assert function["Architectures"] == ["arm64"]
    assert function["MemorySize"] == settings.lambda_memory_mb
    assert function["Timeout"] == settings.lambda_timeout_seconds
    assert function["Environment"]["Variables"] == environment
    log_group = function.get("LoggingConfig", {}).get("LogGroup", f"/aws/lambda/{outputs.function_name}")
    assert log_group == outputs.log_group_name


def test_event_source_mapping_is_enabled_with_the_stack_settings(target: Target):
    outputs = target.outputs
    expected = MappingConfig.from_settings(target.settings).api_fields()
    if isinstance(target, LocalTarget):
        mapping = target.pipeline.mapping
        actual = mapping.config.api_fields()
        # The local suites shorten the batching window (it only delays delivery); all else is the stack's.
        expected.pop("MaximumBatchingWindowInSeconds")
        actual.pop("MaximumBatchingWindowInSeconds")
        assert actual == expected
        assert mapping.stream_arn == outputs.stream_arn
        assert mapping.on_failure_bucket == outputs.failure_bucket_name
        assert target.pipeline.running, "the local mapping is polling"
        return
    mappings = target.client("lambda").list_event_source_mappings(
        FunctionName=outputs.function_alias_arn, EventSourceArn=outputs.stream_arn
    )["EventSourceMappings"]
    assert len(mappings) == 1, f"exactly one mapping from {outputs.stream_arn} to {outputs.function_alias_arn}"
    [mapping] = mappings
    assert mapping["State"] == "Enabled"
    assert mapping["FunctionArn"] == outputs.function_alias_arn
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert {key: mapping.get(key) for key in expected} == expected
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == f"arn:aws:s3:::{outputs.failure_bucket_name}"


def test_workgroup_configuration(target: Target):
    outputs, settings = target.outputs, target.settings
    workgroup = target.client("athena").get_work_group(WorkGroup=outputs.athena_workgroup_name)["WorkGroup"]
    configuration = workgroup["Configuration"]
    assert workgroup["State"] == "ENABLED"
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["BytesScannedCutoffPerQuery"] == settings.athena_bytes_scanned_cutoff
    assert configuration["EngineVersion"]["SelectedEngineVersion"] == ENGINE_VERSION
    results = configuration["ResultConfiguration"]
    assert results["OutputLocation"] == f"s3://{outputs.athena_results_bucket_name}/{outputs.athena_results_prefix}"
    assert results["EncryptionConfiguration"]["EncryptionOption"] in ("SSE_S3", "SSE_KMS")


def test_workgroup_holds_the_named_queries(target: Target):
    outputs = target.outputs
    athena = target.client("athena")
    ids = athena.list_named_queries(WorkGroup=outputs.athena_workgroup_name)["NamedQueryIds"]
    held = {query["Name"]: query for query in (athena.get_named_query(NamedQueryId=i)["NamedQuery"] for i in ids)}
    for spec in named_queries(outputs.athena_database_name, outputs.glue_table_name):
        assert spec.name in held, f"named query {spec.name} in {outputs.athena_workgroup_name}"
        assert held[spec.name]["QueryString"].strip() == spec.sql.strip()
        assert held[spec.name]["Database"] == outputs.athena_database_name


def test_glue_table_location_columns_and_projection(target: Target):
    outputs = target.outputs
    table = target.client("glue").get_table(DatabaseName=outputs.athena_database_name, Name=outputs.glue_table_name)
    table = table["Table"]
    location = f"s3://{outputs.bucket_name}/{outputs.events_prefix}"
    storage = table["StorageDescriptor"]
    assert storage["Location"] == location
    assert [(column["Name"], column["Type"]) for column in storage["Columns"]] == [
        (column.name, column.type) for column in glue_columns()
    ]
    assert [key["Name"] for key in table["PartitionKeys"]] == [name for name, _ in PARTITION_KEYS]
    assert table["Parameters"]["projection.enabled"] == "true"
    assert table["Parameters"]["storage.location.template"].startswith(location)
    assert "ParquetHiveSerDe" in storage["SerdeInfo"]["SerializationLibrary"]


def test_stream_and_failure_bucket(target: Target):
    outputs = target.outputs
    summary = target.client("kinesis").describe_stream_summary(StreamARN=outputs.stream_arn)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert summary["StreamDescriptionSummary"]["StreamName"] == outputs.stream_name
    # The CI role may list the failure bucket (s3:ListBucket), which is all a healthy stack needs to show.
    listing = target.client("s3").list_objects_v2(Bucket=outputs.failure_bucket_name, Prefix="aws/lambda/", MaxKeys=1)
    assert listing["Name"] == outputs.failure_bucket_name


def test_table_changes_reach_the_stream(target: Target):
    outputs = target.outputs
    dynamodb = target.client("dynamodb")
    if isinstance(target, LocalTarget):  # the local bridge stands in for the streaming destination
        table = dynamodb.describe_table(TableName=outputs.table_name)["Table"]
        assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        assert target.pipeline.bridge.stream_name == outputs.stream_name
        assert target.pipeline.bridge.precision == target.settings.change_time_precision
        return
    destinations = dynamodb.describe_kinesis_streaming_destination(TableName=outputs.table_name)
    active = [
        destination
        for destination in destinations["KinesisDataStreamDestinations"]
        if destination["StreamArn"] == outputs.stream_arn and destination["DestinationStatus"] == "ACTIVE"
    ]
    assert active, f"{outputs.table_name} streams to {outputs.stream_arn}"
    precision = active[0].get("ApproximateCreationDateTimePrecision", "MILLISECOND")
    assert precision == target.settings.change_time_precision
