"""The local AWS's evaluation of ``Null`` on the conditional-write keys, on the pure functions behind it."""

from __future__ import annotations

import pytest

from sandbox.authorization import null_conditions_hold, request_condition_keys

CREATE = {"Null": {"s3:if-none-match": "false"}}
OVERWRITE = {"Null": {"s3:if-match": "false"}}


def test_a_put_sets_the_keys_of_its_conditional_headers_whatever_their_case():
    assert request_condition_keys("s3:PutObject", {"If-None-Match": "*", "Content-Type": "x"}) == {
        "s3:if-none-match": "*"
    }
    assert request_condition_keys("s3:PutObject", {"if-match": '"e1"'}) == {"s3:if-match": '"e1"'}
    assert request_condition_keys("s3:PutObject", {"Content-Length": "2"}) == {}


def test_only_the_actions_s3_defines_the_keys_on_set_them():
    # a conditional GET carries the same headers, but S3 defines neither key on s3:GetObject
    assert request_condition_keys("s3:GetObject", {"If-None-Match": '"e1"', "If-Match": '"e1"'}) == {}
    assert request_condition_keys("s3:DeleteObject", {"If-None-Match": "*", "If-Match": '"e1"'}) == {
        "s3:if-match": '"e1"'
    }
    assert request_condition_keys("kinesis:PutRecords", {"If-Match": '"e1"'}) == {}


@pytest.mark.parametrize(
    ("condition", "present", "holds"),
    [
        (CREATE, {"s3:if-none-match": "*"}, True),
        (CREATE, {}, False),
        (CREATE, {"s3:if-match": '"e1"'}, False),
        (OVERWRITE, {"s3:if-match": '"e1"'}, True),
        (OVERWRITE, {"s3:if-none-match": "*"}, False),
        ({"Null": {"s3:if-none-match": "true"}}, {}, True),
        ({"Null": {"s3:if-none-match": "true"}}, {"s3:if-none-match": "*"}, False),
        # a list of values: any of them
        ({"Null": {"s3:if-match": ["true", "false"]}}, {}, True),
        # every key of the block must hold
        ({"Null": {"s3:if-match": "true", "s3:if-none-match": "false"}}, {"s3:if-none-match": "*"}, True),
        ({"Null": {"s3:if-match": "false", "s3:if-none-match": "false"}}, {"s3:if-none-match": "*"}, False),
    ],
)
def test_null_holds_as_iam_evaluates_it(condition, present, holds):
    assert null_conditions_hold(condition, present) is holds


def test_other_operators_and_keys_are_not_evaluated():
    assert null_conditions_hold({"StringLike": {"s3:prefix": ["demand/*"]}}, {}) is True
    assert null_conditions_hold({"Null": {"aws:TokenIssueTime": "false"}}, {}) is True
    assert null_conditions_hold({"StringEquals": {"s3:if-none-match": "*"}}, {}) is True
