"""The instances themselves: run (IMDSv2, encrypted gp3 root, tags, optional persistent spot), find, terminate.

Spot instances come from a persistent request with interruption behaviour `stop`: an
interrupted instance is stopped, keeps its disk, and EC2 starts it again when capacity is back,
where the bootstrap resumes training. `down` cancels the request before terminating, or the
request would replace what it terminates.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

NAME_TAG = "dogbreed:name"
RUN_TAG = "dogbreed:run"
# Read by the bootstrap through instance metadata, to cancel its own request before terminating.
SPOT_REQUEST_TAG = "dogbreed:spot-request"
OPEN_REQUEST_STATES = ["open", "active", "disabled"]
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def tags_for(name: str, extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The tags every resource of one launch carries (`extra`: `ami.tags`); NAME_TAG is how status and down
    find them, and `project=dogbreed` what the operator policy lets a user change or end."""
    own = [{"Key": "Name", "Value": name}, {"Key": NAME_TAG, "Value": name}, {"Key": "project", "Value": "dogbreed"}]
    return own + [{"Key": k, "Value": v} for k, v in sorted((extra or {}).items()) if k not in {t["Key"] for t in own}]


def run_request(
    *,
    name: str,
    image_id: str,
    root_device: str,
    instance_type: str,
    key_name: str,
    group_id: str,
    profile_arn: str,
    user_data: str,
    volume_gb: int,
    spot: bool,
    spot_max_price: float | None,
    shutdown_behavior: str,
    run_name: str,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The RunInstances arguments for one instance; every safety setting lives here, in one place."""
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "SecurityGroupIds": [group_id],
        "IamInstanceProfile": {"Arn": profile_arn},
        "UserData": user_data,
        # IMDSv2 only: a request forged through the instance (SSRF) cannot read the role's credentials.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "InstanceMetadataTags": "enabled"},
        # What a `shutdown` on the instance does: the bootstrap's end of training and idle watcher use it.
        "InstanceInitiatedShutdownBehavior": shutdown_behavior,
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {"VolumeSize": volume_gb, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
            }
        ],
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": [*tags_for(name, extra_tags), {"Key": RUN_TAG, "Value": run_name}]},
            {"ResourceType": "volume", "Tags": tags_for(name, extra_tags)},
        ],
    }
    if spot:
        options: dict[str, Any] = {"SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}
        if spot_max_price is not None:
            options["MaxPrice"] = f"{spot_max_price:.4f}"
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        request["TagSpecifications"].append(
            {"ResourceType": "spot-instances-request", "Tags": tags_for(name, extra_tags)}
        )
    return request


class Instances:
    """Runs, finds and terminates the project's instances through an injected EC2 client."""

    def __init__(self, ec2: Any, wait_timeout_s: float = 600, retry_delay_s: float = 5) -> None:
        self.ec2 = ec2
        self.wait_timeout_s = wait_timeout_s
        self.retry_delay_s = retry_delay_s

    def root_device(self, image_id: str) -> str:
        """The AMI's root device name, so the volume settings apply to the root volume."""
        return self.ec2.describe_images(ImageIds=[image_id])["Images"][0]["RootDeviceName"]

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Starts one instance and waits until it runs; returns its description."""
        instance_id = self._run_when_profile_visible(request)
        log.info("started %s, waiting until it runs", instance_id)
        self.ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=self._waiter_config())
        instance = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        if instance.get("SpotInstanceRequestId"):
            tag = {"Key": SPOT_REQUEST_TAG, "Value": instance["SpotInstanceRequestId"]}
            self.ec2.create_tags(Resources=[instance_id], Tags=[tag])
        return instance

    def _run_when_profile_visible(self, request: dict[str, Any]) -> str:
        # A new instance profile takes seconds to reach EC2 (IAM is eventually consistent).
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.ec2.run_instances(**request)["Instances"][0]["InstanceId"]
            except ClientError as err:
                code, message = err.response["Error"]["Code"], err.response["Error"].get("Message", "")
                if code != "InvalidParameterValue" or "iamInstanceProfile" not in message:
                    raise
                if time.monotonic() > deadline:
                    raise
                log.info("instance profile not visible to EC2 yet; retrying in %s s", self.retry_delay_s)
                time.sleep(self.retry_delay_s)

    def find(self, name: str) -> list[dict[str, Any]]:
        """The project's instances that are not terminated, oldest first."""
        found = []
        for page in self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": f"tag:{NAME_TAG}", "Values": [name]},
                {"Name": "instance-state-name", "Values": LIVE_STATES},
            ]
        ):
            found += [instance for reservation in page["Reservations"] for instance in reservation["Instances"]]
        return sorted(found, key=lambda instance: (instance["LaunchTime"], instance["InstanceId"]))

    def spot_requests(self, name: str, states: list[str] | None = OPEN_REQUEST_STATES) -> list[dict[str, Any]]:
        """The project's spot requests in `states` (default: those that can still start an instance; None: all)."""
        filters = [{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
        if states is not None:
            filters.append({"Name": "state", "Values": states})
        return self.ec2.describe_spot_instance_requests(Filters=filters)["SpotInstanceRequests"]

    def cancel_spot_requests(self, name: str) -> list[str]:
        """Cancels them, so nothing replaces the instances `terminate` ends next; returns their ids."""
        ids = [request["SpotInstanceRequestId"] for request in self.spot_requests(name)]
        if ids:
            self.ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=ids)
            log.info("cancelled spot request(s) %s", ", ".join(ids))
        return ids

    def terminate(self, instance_ids: list[str]) -> None:
        """Terminates and waits, so the security group they use can be deleted next."""
        if not instance_ids:
            return
        self.ec2.terminate_instances(InstanceIds=instance_ids)
        log.info("terminating %s", ", ".join(instance_ids))
        self.ec2.get_waiter("instance_terminated").wait(InstanceIds=instance_ids, WaiterConfig=self._waiter_config())

    def _waiter_config(self) -> dict[str, int]:
        delay = 5
        return {"Delay": delay, "MaxAttempts": max(1, int(self.wait_timeout_s // delay))}
