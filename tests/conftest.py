"""Fixtures shared by the end-to-end, integration and fault suites: the target environment they run against.

Started lazily: a test that does not ask for them never starts a local AWS. Under pytest-xdist each worker
process has its own local AWS (its own moto server on an ephemeral port).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from sandbox.local_aws import LocalAws, local_aws
from sandbox.models import share_loaded_models
from sandbox.server import reuse_servers
from sandbox.targets import LocalTarget, Target, TargetUnavailableError, deployed_target, selected_environment

# Hypothesis judges a test by how long its examples take (a deadline per example, a health check on slow input
# generation): wall-clock limits that fail on a loaded machine. The suite's properties are about values only.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# Thousands of boto3 clients are created across the suite: parse botocore's models once per worker, not per client.
share_loaded_models()
# Each worker boots moto once and empties it between local AWS instead of booting one per local AWS.
reuse_servers()

# The stacks' batching window (seconds) only delays delivery; locally a shorter one keeps the suites quick.
LOCAL_BATCHING_WINDOW_SECONDS = 0.3


@pytest.fixture(scope="session")
def local_target() -> Iterator[LocalTarget]:
    """The embedded local AWS with dev1's settings and its pipeline running the real handler."""
    aws: LocalAws
    with local_aws("dev1") as aws:
        config = aws.mapping_config(batching_window_seconds=LOCAL_BATCHING_WINDOW_SECONDS)
        with aws.pipeline(config=config) as pipeline:
            yield LocalTarget(aws, pipeline)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The environment named by TEST_ENV: local (default) or a deployed non-prod stack. Never skips."""
    try:
        environment = selected_environment()
        chosen: Target = (
            request.getfixturevalue("local_target") if environment == "local" else deployed_target(environment)
        )
    except TargetUnavailableError as error:
        problem = str(error)
    else:
        return chosen
    pytest.fail(problem, pytrace=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a slow test run first (each module's tests still together and in order): a long test
    started near the end would leave the other workers idle while it finishes."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items[:] = sorted(items, key=lambda item: item.path not in slow)
