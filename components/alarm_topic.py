"""Where the alarms go: an existing SNS topic, or the stack's own encrypted topic and its subscribers.

CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key ``alias/aws/sns`` (its key policy
cannot be changed to let CloudWatch use it), so the stack's own topic gets a customer managed key whose policy
lets CloudWatch, for this account's alarms only, encrypt to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.policies import alarm_topic_key_policy, alarm_topic_policy

__all__ = ["AlarmTopic", "AlarmTopicArgs", "subscription_parts"]


def subscription_parts(subscription: str) -> tuple[str, str]:
    """``"<protocol>:<endpoint>"`` -> (protocol, endpoint); the endpoint may itself contain colons."""
    protocol, _, endpoint = subscription.partition(":")
    if not protocol or not endpoint:
        raise ValueError(f"alarm subscription must be <protocol>:<endpoint>, got {subscription!r}")
    return protocol, endpoint


@dataclass(frozen=True)
class AlarmTopicArgs:
    """The topic's name, an existing topic to use instead, the subscribers, and which alarms may publish."""

    topic_name: str
    existing_topic_arn: str | None
    subscriptions: tuple[str, ...]
    region: str
    alarm_name_prefix: str


class AlarmTopic(pulumi.ComponentResource):
    """The SNS topic every alarm of the stack notifies, on alarm and on return to OK."""

    topic_arn: pulumi.Output[str]
    """ARN of the topic the alarms notify."""

    def __init__(self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("dmd-pipeline:index:AlarmTopic", name, None, opts)
        self._name = name
        if args.existing_topic_arn is not None:
            # Not this stack's topic: use it, change nothing on it (its owner manages encryption and subscribers).
            self.topic_arn = pulumi.Output.from_input(args.existing_topic_arn)
        else:
            self.topic_arn = self._create_topic(args)
        self.register_outputs({"topic_arn": self.topic_arn})

    def _create_topic(self, args: AlarmTopicArgs) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOptions(parent=self)).account_id
        alarm_arns = pulumi.Output.concat(
            "arn:aws:cloudwatch:", args.region, ":", account_id, ":alarm:", args.alarm_name_prefix, "-*"
        )
        key = aws.kms.Key(
            f"{self._name}-key",
            description=f"Encrypts the alarm topic {args.topic_name}; CloudWatch alarms of this account may use it.",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=account_id.apply(lambda account: json.dumps(alarm_topic_key_policy(account_id=account))),
            opts=child,
        )
        aws.kms.Alias(f"{self._name}-key-alias", name=f"alias/{args.topic_name}", target_key_id=key.key_id, opts=child)
        topic = aws.sns.Topic(f"{self._name}-topic", name=args.topic_name, kms_master_key_id=key.arn, opts=child)
        aws.sns.TopicPolicy(
            f"{self._name}-topic-policy",
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, account_id, alarm_arns).apply(
                lambda values: json.dumps(
                    alarm_topic_policy(topic_arn=values[0], account_id=values[1], alarm_arns=values[2])
                )
            ),
            opts=child,
        )
        for index, subscription in enumerate(args.subscriptions):
            protocol, endpoint = subscription_parts(subscription)
            aws.sns.TopicSubscription(
                f"{self._name}-subscription-{index}",
                topic=topic.arn,
                protocol=protocol,
                endpoint=endpoint,
                opts=child,
            )
        return topic.arn
