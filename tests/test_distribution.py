"""The suite's distribution: modules marked ``xdist_group`` run on one worker, so their module fixtures run once.

pytest-xdist marks a grouped test by suffixing its node id with ``@<group>``; a pytest release that changes node
ids can silently stop the grouping (pytest-xdist#1386), which doubles the costliest fixtures' time.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.xdist_group("distribution")


def test_a_grouped_module_runs_as_one_group_under_make_unit(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("run without --dist loadgroup (make unit distributes with it)")

    assert request.node.nodeid.endswith("::test_a_grouped_module_runs_as_one_group_under_make_unit@distribution")
