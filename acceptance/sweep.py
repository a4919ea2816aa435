"""What an acceptance run left behind: tagged resources (Resource Groups Tagging API) and the untaggable ones by name.

A SageMaker training job, a terminated instance and its run's S3 objects are history, not
leaks: jobs cannot be deleted and bill nothing once ended. Everything else that still exists is
listed as `kind name`, so a failed or interrupted run says exactly what to remove (`down` of
the flow, or the console).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TAG_KEY = "dogbreed-acceptance"
ENDED = {"terminated", "shutting-down"}
# Created by SageMaker and Lambda for the endpoint and the function, and by ami for the training log.
LOG_PREFIXES = ("/aws/sagemaker/Endpoints/{name}", "/aws/lambda/{name}", "/dogbreed/ami/{name}")


def leftovers(client: Callable[[str], Any], run_id: str, name: str) -> list[str]:
    """Every billable or account-cluttering resource of the run still there, as `kind name` lines."""
    found = [*_tagged(client, run_id), *_roles(client("iam"), name), *_key_pairs(client("ec2"), name)]
    found += _scaling_targets(client("application-autoscaling"), name)
    found += _log_groups(client("logs"), name) + _alarms(client("cloudwatch"), name)
    found += _live_instances(client("ec2"), run_id)
    return sorted(set(found))


def _tagged(client: Callable[[str], Any], run_id: str) -> list[str]:
    found = []
    pages = client("resourcegroupstaggingapi").get_paginator("get_resources")
    for page in pages.paginate(TagFilters=[{"Key": TAG_KEY, "Values": [run_id]}]):
        for mapping in page["ResourceTagMappingList"]:
            arn = mapping["ResourceARN"]
            service, resource = arn.split(":")[2], arn.split(":", 5)[5]
            if service == "sagemaker" and resource.startswith("training-job/"):
                continue  # ended jobs are history
            if service == "ec2" and resource.startswith(("instance/", "volume/")):
                continue  # instances are judged by their state below; volumes go with them
            found.append(f"{service} {resource}")
    return found


def _live_instances(ec2: Any, run_id: str) -> list[str]:
    filters = [{"Name": f"tag:{TAG_KEY}", "Values": [run_id]}]
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [
        f"ec2 instance/{i['InstanceId']} ({i['State']['Name']})"
        for r in reservations
        for i in r["Instances"]
        if i["State"]["Name"] not in ENDED
    ]


def _roles(iam: Any, name: str) -> list[str]:
    roles = [r["RoleName"] for p in iam.get_paginator("list_roles").paginate() for r in p["Roles"]]
    profiles = [
        p["InstanceProfileName"] for page in iam.get_paginator("list_instance_profiles").paginate()
        for p in page["InstanceProfiles"]
    ]  # fmt: skip
    return [f"iam role/{r}" for r in roles if r.startswith(name)] + [
        f"iam instance-profile/{p}" for p in profiles if p.startswith(name)
    ]


def _key_pairs(ec2: Any, name: str) -> list[str]:
    pairs = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [f"{name}*"]}])["KeyPairs"]
    return [f"ec2 key-pair/{p['KeyName']}" for p in pairs]


def _scaling_targets(aas: Any, name: str) -> list[str]:
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    return [
        f"application-autoscaling {t['ResourceId']}" for t in targets if t["ResourceId"].startswith(f"endpoint/{name}")
    ]


def _log_groups(logs: Any, name: str) -> list[str]:
    found = []
    for prefix in LOG_PREFIXES:
        for page in logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=prefix.format(name=name)):
            found += [f"logs log-group:{g['logGroupName']}" for g in page["logGroups"]]
    return found


def _alarms(cloudwatch: Any, name: str) -> list[str]:
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix=name)["MetricAlarms"]
    return [f"cloudwatch alarm:{a['AlarmName']}" for a in alarms]
