"""Naming helper and bucket layout."""

from __future__ import annotations

import pytest

from components.naming import NAME_LIMITS, Naming, prefixes


def test_physical_and_snake_names() -> None:
    naming = Naming("PRD3292", "qa1", "us-east-1")
    assert naming.physical("demand-processor") == "prd3292-qa1-demand-processor"
    assert naming.snake("demand") == "prd3292_qa1_demand"
    assert naming.seed_stream_name() == "prd3292-qa1-dmnd-table-stream"
    assert naming.seed_table_name() == "prd3292-qa1-us-east-1-demand-table"
    assert naming.seed_bucket_id() == "prd3292.qa1.us-east-1.demand-capture.tmaws"


def test_resource_names_of_a_stack() -> None:
    created = Naming("PRD3292", "prod1", "us-east-1").resources()
    assert created.function == "prd3292-prod1-demand-processor"
    assert created.failure_bucket == "prd3292-prod1-us-east-1-demand-processor-failures"
    assert created.curator_function == "prd3292-prod1-demand-curator"
    assert created.curator_log_group == "/aws/lambda/prd3292-prod1-demand-curator"
    assert created.curator_schedule == "prd3292-prod1-demand-curation"
    assert created.curator_schedule_group == "prd3292-prod1-demand-curation"
    assert created.curator_scheduler_role == "prd3292-prod1-demand-curation-scheduler"
    assert created.curator_dead_letter_queue == "prd3292-prod1-demand-curation-undelivered"
    assert created.layer == "prd3292-prod1-demand-dependencies"
    assert created.log_group == "/aws/lambda/prd3292-prod1-demand-processor"
    assert created.iterator_age_alarm == "prd3292-prod1-demand-processor-iterator-age"
    assert (created.glue_database, created.glue_table) == ("prd3292_prod1_demand", "prd3292_prod1_demand_changes")
    assert created.workgroup == "prd3292_prod1_demand"
    assert created.ci_role == "prd3292-prod1-gitlab-ci"


@pytest.mark.parametrize("role", ["Demand", "a_b", "-x", ""])
def test_roles_must_be_kebab_case(role: str) -> None:
    with pytest.raises(ValueError, match="kebab-case"):
        Naming("PRD3292", "qa1", "us-east-1").physical(role)


def test_prefixes() -> None:
    layout = prefixes()
    assert layout.events == "demand/events/"
    assert layout.quarantine == "demand/quarantine/"
    assert layout.athena_results == "demand/athena-results/"
    assert layout.artifacts == "demand/artifacts/"
    # the curator's default (curator.handler), outside the raw layout whatever its root
    assert layout.curated == prefixes("other/").curated == "curated/"
    with pytest.raises(ValueError, match="must end with"):
        prefixes("/demand")


@pytest.mark.parametrize("environment", ["dev1", "qa1", "preprod1", "prod1"])
def test_every_stack_name_fits_aws_limits(environment: str) -> None:
    names = Naming("PRD3292", environment, "us-east-1").resources()
    for field, limit in NAME_LIMITS.items():
        assert len(getattr(names, field)) <= limit, field
    assert len(names.iterator_age_alarm) <= 255
    for glue_name in (names.glue_database, names.glue_table, names.workgroup):
        assert glue_name == glue_name.lower()


def test_a_name_aws_would_reject_fails_early() -> None:
    with pytest.raises(ValueError, match=r"function name .* is 65 characters, AWS allows 64"):
        Naming("PRD3292", "e" * 40, "us-east-1").resources()
    with pytest.raises(ValueError, match=r"glue_database name 'prd3292_QA1_demand' must be lower-case"):
        Naming("PRD3292", "QA1", "us-east-1").resources()
