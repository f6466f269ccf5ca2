"""The suite's distribution: modules marked ``xdist_group`` run on one worker, so their module fixtures run once;
modules holding a slow test are collected first.

pytest-xdist marks a grouped test by suffixing its node id with ``@<group>``; a pytest release that changes node
ids can silently stop the grouping (pytest-xdist#1386), which doubles the costliest fixtures' time.
"""

from __future__ import annotations

import pytest

from tests.conftest import pytest_collection_modifyitems

pytestmark = pytest.mark.xdist_group("distribution")


def test_a_grouped_module_runs_as_one_group_under_make_unit(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("run without --dist loadgroup (make unit distributes with it)")

    assert request.node.nodeid.endswith("::test_a_grouped_module_runs_as_one_group_under_make_unit@distribution")


class _Item:
    def __init__(self, path: str, slow: bool = False) -> None:
        self.path, self.slow = path, slow

    def get_closest_marker(self, name: str) -> object | None:
        return "slow" if name == "slow" and self.slow else None


def test_modules_holding_a_slow_test_run_first_each_whole_and_in_order() -> None:
    a1, a2 = _Item("a.py"), _Item("a.py")
    b1, b2 = _Item("b.py"), _Item("b.py", slow=True)
    c1 = _Item("c.py")
    d1, d2 = _Item("d.py", slow=True), _Item("d.py")
    items = [a1, a2, b1, b2, c1, d1, d2]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert items == [b1, b2, d1, d2, a1, a2, c1]
