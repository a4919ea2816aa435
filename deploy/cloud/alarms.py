"""CloudWatch alarms on the endpoint and its Lambda, and the optional SNS topic that mails them.

Each alarm's description carries a hash of its definition, so `up` rewrites only alarms whose
settings changed and a second `up` reports nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

PERIOD_S = 60


def endpoint_alarms(endpoint: str, variant: str, latency_p99_ms: float, error_4xx_rate: float) -> list[dict[str, Any]]:
    """5XX errors, p99 model latency and the 4XX share of the variant: the canary's rollback alarms."""
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]

    def metric(name: str) -> dict[str, Any]:
        return {"Namespace": "AWS/SageMaker", "MetricName": name, "Dimensions": dimensions}

    def summed(metric_id: str, name: str) -> dict[str, Any]:
        stat = {"Metric": metric(name), "Period": PERIOD_S, "Stat": "Sum"}
        return {"Id": metric_id, "MetricStat": stat, "ReturnData": False}

    return [
        {
            "AlarmName": f"{endpoint}-5xx",
            **metric("Invocation5XXErrors"),
            "Statistic": "Sum",
            "Period": PERIOD_S,
            "EvaluationPeriods": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        },
        {
            "AlarmName": f"{endpoint}-latency-p99",
            **metric("ModelLatency"),
            "ExtendedStatistic": "p99",
            "Period": PERIOD_S,
            "EvaluationPeriods": 3,
            "Threshold": latency_p99_ms * 1000.0,  # ModelLatency is in microseconds
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
        {
            "AlarmName": f"{endpoint}-4xx-rate",
            "Metrics": [
                {"Id": "rate", "Expression": "errors / requests", "ReturnData": True},  # no traffic: no data, OK
                summed("errors", "Invocation4XXErrors"),
                summed("requests", "Invocations"),
            ],
            "EvaluationPeriods": 5,
            "Threshold": float(error_4xx_rate),
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    ]


def lambda_alarms(function: str) -> list[dict[str, Any]]:
    """Errors (the handler crashed) and throttles (reserved concurrency reached) of the front door."""
    dimensions = [{"Name": "FunctionName", "Value": function}]
    return [
        {
            "AlarmName": f"{function}-{name.lower()}",
            "Namespace": "AWS/Lambda",
            "MetricName": name,
            "Dimensions": dimensions,
            "Statistic": "Sum",
            "Period": PERIOD_S,
            "EvaluationPeriods": 1,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        }
        for name in ("Errors", "Throttles")
    ]


def ensure_alarms(cw: Any, alarms: list[dict[str, Any]], actions: list[str]) -> list[str]:
    """Puts each alarm whose definition (with `actions`) differs from what is there; returns their names."""
    existing = {a["AlarmName"]: a for a in describe(cw, [a["AlarmName"] for a in alarms])}
    changed = []
    for alarm in alarms:
        spec = {**alarm, "AlarmActions": actions}
        description = f"dogbreed deploy alarm; definition {_digest(spec)}"
        if existing.get(alarm["AlarmName"], {}).get("AlarmDescription") == description:
            continue
        cw.put_metric_alarm(**spec, AlarmDescription=description, ActionsEnabled=True)
        log.info("alarm %s set", alarm["AlarmName"])
        changed.append(alarm["AlarmName"])
    return changed


def describe(cw: Any, names: list[str]) -> list[dict[str, Any]]:
    """The metric alarms among `names` that exist."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
        pages = cw.get_paginator("describe_alarms").paginate(AlarmNames=names[start : start + 100])
        for page in pages:
            found += page["MetricAlarms"]
    return found


def delete_alarms(cw: Any, names: list[str]) -> list[str]:
    """Deletes those of `names` that exist; returns them."""
    present = [a["AlarmName"] for a in describe(cw, names)]
    if present:
        cw.delete_alarms(AlarmNames=present)
    return present


def states(cw: Any, names: list[str]) -> dict[str, str]:
    """Each alarm's state (`OK`, `ALARM`, `INSUFFICIENT_DATA`), `absent` when it does not exist."""
    found = {a["AlarmName"]: a["StateValue"] for a in describe(cw, names)}
    return {name: found.get(name, "absent") for name in names}


def ensure_topic(sns: Any, name: str, email: str) -> tuple[str, bool]:
    """The topic `name` with `email` subscribed; returns its ARN and whether a subscription was asked for.

    AWS mails a confirmation link; alarms reach the address once it is followed.
    """
    arn = sns.create_topic(Name=name)["TopicArn"]  # idempotent: the existing topic's ARN
    subscribed = set()
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn):
        subscribed |= {s["Endpoint"] for s in page["Subscriptions"] if s["Protocol"] == "email"}
    if email in subscribed:
        return arn, False
    sns.subscribe(TopicArn=arn, Protocol="email", Endpoint=email)
    log.info("subscribed %s to %s (AWS mails a confirmation link)", email, arn)
    return arn, True


def topic_exists(sns: Any, arn: str) -> bool:
    """Whether the topic is there (asked by ARN: ListTopics cannot be limited to the project's topics)."""
    try:
        sns.get_topic_attributes(TopicArn=arn)
    except ClientError as err:
        if err.response["Error"]["Code"] == "NotFound":
            return False
        raise
    return True


def delete_topic(sns: Any, arn: str) -> None:
    """Deletes the topic and with it its subscriptions."""
    sns.delete_topic(TopicArn=arn)
    log.info("deleted topic %s", arn)


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
