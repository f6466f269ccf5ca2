"""Settings: read once from the environment, with errors that name the variable and the value."""

from __future__ import annotations

import pytest

from pipeline import config
from pipeline.config import ENVIRONMENT_VARIABLES, Settings, load_settings
from pipeline.exceptions import ConfigError


def test_defaults_apply_when_only_the_bucket_is_set():
    assert load_settings({"OUTPUT_BUCKET": "dmd-lake"}) == Settings(
        output_bucket="dmd-lake",
        output_prefix="demand/events/",
        quarantine_prefix="demand/quarantine/",
        change_time_precision="MILLISECOND",
        log_level="INFO",
        service_name="dmd-pipeline",
        metrics_namespace="DmdPipeline",
    )


def test_every_variable_is_read():
    settings = load_settings(
        {
            "OUTPUT_BUCKET": "prd3292-dev1-demand-lake",
            "OUTPUT_PREFIX": "lake/events/",
            "QUARANTINE_PREFIX": "lake/quarantine/",
            "CHANGE_TIME_PRECISION": "microsecond",
            "LOG_LEVEL": "debug",
            "POWERTOOLS_SERVICE_NAME": "demand-processor",
            "POWERTOOLS_METRICS_NAMESPACE": "Demand",
            "SOURCE_TABLE_NAME": "prd3292-dev1-demand",
        }
    )
    assert settings.source_table_name == "prd3292-dev1-demand"
    assert (settings.output_prefix, settings.quarantine_prefix) == ("lake/events/", "lake/quarantine/")
    assert (settings.change_time_precision, settings.log_level) == ("MICROSECOND", "DEBUG")
    assert (settings.service_name, settings.metrics_namespace) == ("demand-processor", "Demand")
    assert set(ENVIRONMENT_VARIABLES) == {
        config.OUTPUT_BUCKET, config.OUTPUT_PREFIX, config.QUARANTINE_PREFIX, config.CHANGE_TIME_PRECISION,
        config.LOG_LEVEL, config.POWERTOOLS_SERVICE_NAME, config.POWERTOOLS_METRICS_NAMESPACE,
        config.SOURCE_TABLE_NAME,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({}, "OUTPUT_BUCKET is required"),
        ({"OUTPUT_BUCKET": "ab"}, "OUTPUT_BUCKET='ab' is not an S3 bucket name"),
        ({"OUTPUT_BUCKET": "s3://lake"}, "OUTPUT_BUCKET='s3://lake'"),
        ({"OUTPUT_PREFIX": "/demand/events/"}, "OUTPUT_PREFIX='/demand/events/' is not a key prefix"),
        ({"OUTPUT_PREFIX": "demand/events"}, "OUTPUT_PREFIX='demand/events' is not a key prefix"),
        ({"QUARANTINE_PREFIX": "demand/../x/"}, "QUARANTINE_PREFIX='demand/../x/' is not a key prefix"),
        ({"QUARANTINE_PREFIX": "demand/events/bad/"}, "must not contain one another"),
        ({"CHANGE_TIME_PRECISION": "SECOND"}, "CHANGE_TIME_PRECISION='SECOND' is not one of MILLISECOND, MICRO"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD' is not one of DEBUG, INFO"),
        ({"SOURCE_TABLE_NAME": "demand table"}, "SOURCE_TABLE_NAME='demand table' is not a DynamoDB table name"),
        ({"SOURCE_TABLE_NAME": "ab"}, "SOURCE_TABLE_NAME='ab' is not a DynamoDB table name"),
    ],
)
def test_invalid_values_name_the_variable_and_value(environment, message):
    base = {"OUTPUT_BUCKET": "dmd-lake"} if "OUTPUT_BUCKET" not in environment and environment else {}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_settings({**base, **environment})
