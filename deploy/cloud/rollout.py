"""How a live endpoint moves to a new config: blue/green with a canary and alarm rollback, or all at once.

SageMaker always updates blue/green: the new (green) fleet starts beside the old one. With a
canary, `canary_percent` of the green capacity takes traffic for `wait_s` first; if an alarm
fires during that bake (or the final one), traffic goes back to the blue fleet and the endpoint
stays on its old config. Serverless endpoints have no instance capacity to size a canary by, so
they switch all at once.
"""

from __future__ import annotations

from typing import Any

from deploy.cloud.errors import DeployError


def deployment_config(
    mode: str, canary_percent: int, wait_s: int, alarms: list[str], instances: int
) -> dict[str, Any] | None:
    """UpdateEndpoint's DeploymentConfig; None for all_at_once (SageMaker's default switch).

    SageMaker takes a canary of at most half the variant's instances, so a fleet of one cannot
    have one: it then switches all at once, but still bakes `wait_s` with the rollback alarms.

    Args:
        mode: `canary` or `all_at_once`.
        canary_percent: share of the new fleet's capacity that takes traffic first (1-50).
        wait_s: how long the canary bakes, and the full fleet after it, before the old fleet goes.
        alarms: CloudWatch alarm names; any of them in ALARM rolls the update back.
        instances: the fleet's instance count.
    """
    if mode == "all_at_once":
        return None
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": wait_s}
    if instances >= 2:
        routing = {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": canary_percent},
            "WaitIntervalInSeconds": wait_s,
        }
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            # The final bake: the old fleet stays ready for a rollback this long after the full shift.
            "TerminationWaitInSeconds": wait_s,
            # Both bakes plus half an hour to start the new fleet, within SageMaker's 600-14400.
            "MaximumExecutionTimeoutInSeconds": min(14400, max(600, 2 * wait_s + 1800)),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]},
    }


def check_landed(endpoint: dict[str, Any], config: str, alarms: dict[str, str]) -> None:
    """After the wait: an endpoint back InService on another config was rolled back.

    Args:
        endpoint: DescribeEndpoint's answer.
        config: the endpoint config `up` moved it to.
        alarms: alarm name -> state, to name the ones that fired.

    Raises:
        DeployError: the update was rolled back; the endpoint still serves its old config.
    """
    if endpoint["EndpointConfigName"] == config:
        return
    fired = [name for name, state in alarms.items() if state == "ALARM"]
    why = f"alarm {', '.join(fired)} fired" if fired else endpoint.get("FailureReason", "no reason given")
    raise DeployError(
        f"the update of endpoint {endpoint['EndpointName']} to {config} was rolled back ({why}); it still serves "
        f"{endpoint['EndpointConfigName']}. Container logs: CloudWatch log group "
        f"/aws/sagemaker/Endpoints/{endpoint['EndpointName']}"
    )
