"""Who may reach the instance: the caller's /32 and a security group that admits only it.

SSH (22) is open to one address. With several nodes, every TCP port is open to members of the
same group and to nothing else: torchrun's rendezvous, then gloo and NCCL on ephemeral ports.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.error
import urllib.request
from typing import Any

from botocore.exceptions import ClientError

from ami.errors import AmiError

log = logging.getLogger(__name__)

SSH_PORT = 22


def detect_public_cidr(url: str, timeout_s: float) -> str:
    """Asks `url` (a what-is-my-IP service) for this machine's public address and returns it as a /32."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read(64).decode("ascii", "replace").strip()
    except (OSError, urllib.error.URLError) as err:
        raise AmiError(
            f"could not look up this machine's public address at {url} ({getattr(err, 'reason', err)}); "
            "pass it yourself, e.g. ami.ssh_cidr=203.0.113.7/32"
        ) from err
    try:
        address = ipaddress.ip_address(text)
    except ValueError as err:
        raise AmiError(f"{url} answered {text!r}, not an IP address; pass ami.ssh_cidr=<your address>/32") from err
    return f"{address}/{address.max_prefixlen}"


def ssh_cidr(cfg: Any) -> str:
    """The configured or detected SSH source range, refusing the whole internet unless forced."""
    raw = cfg.ssh_cidr or detect_public_cidr(cfg.ip_lookup_url, cfg.ip_lookup_timeout_s)
    try:
        network = ipaddress.ip_network(str(raw), strict=False)
    except ValueError as err:
        raise AmiError(f"ami.ssh_cidr={raw!r} is not an address range like 203.0.113.7/32") from err
    if network.version != 4:
        raise AmiError(f"ami.ssh_cidr={raw!r}: only IPv4 ranges are supported")
    if network.prefixlen == 0 and not cfg.allow_open_ssh:
        raise AmiError(
            f"ami.ssh_cidr={raw} would open SSH to the whole internet; use your own address as a /32, "
            "or add ami.allow_open_ssh=true if you really mean it"
        )
    return str(network)


class SecurityGroups:
    """Creates, finds and deletes the project's security group through an injected EC2 client."""

    def __init__(self, ec2: Any) -> None:
        self.ec2 = ec2

    def find(self, name: str) -> str | None:
        """The id of the group called `name` in the default VPC, or None."""
        groups = self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])
        return groups["SecurityGroups"][0]["GroupId"] if groups["SecurityGroups"] else None

    def ensure(self, name: str, cidr: str, tags: list[dict[str, str]], between_nodes: bool) -> str:
        """Creates the group or reuses it; its ingress becomes exactly SSH from `cidr` (+ all TCP from itself)."""
        group_id = self.find(name)
        if group_id is None:
            group_id = self.ec2.create_security_group(
                GroupName=name,
                Description="dogbreed training instance: SSH from one address only",
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
            )["GroupId"]
            log.info("created security group %s (%s)", name, group_id)
        else:
            log.info("reusing security group %s (%s)", name, group_id)
        wanted = [
            {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT, "IpRanges": [{"CidrIp": cidr}]},
        ]
        if between_nodes:
            # gloo and NCCL pick ephemeral ports after the rendezvous: the whole range, members only.
            wanted.append(
                {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": [{"GroupId": group_id}]}
            )
        self._replace_ingress(group_id, wanted)
        return group_id

    def _replace_ingress(self, group_id: str, wanted: list[dict[str, Any]]) -> None:
        # A reused group may still allow yesterday's address: revoke whatever is not wanted now.
        current = self.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]["IpPermissions"]
        have, want = [_comparable(rule) for rule in current], [_comparable(rule) for rule in wanted]
        stale = [rule for rule in have if rule not in want]
        if stale:
            self.ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=stale)
        missing = [rule for rule in want if rule not in have]
        if missing:
            self.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)

    def delete(self, name: str) -> bool:
        """Deletes the group; False when it was already gone."""
        group_id = self.find(name)
        if group_id is None:
            return False
        try:
            self.ec2.delete_security_group(GroupId=group_id)
        except ClientError as err:
            if err.response["Error"]["Code"] == "InvalidGroup.NotFound":
                return False
            raise
        log.info("deleted security group %s (%s)", name, group_id)
        return True


def _comparable(rule: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ingress rule that decide what it admits (AWS adds descriptions and ids)."""
    return {
        "IpProtocol": rule["IpProtocol"],
        "FromPort": rule.get("FromPort"),
        "ToPort": rule.get("ToPort"),
        "IpRanges": [{"CidrIp": r["CidrIp"]} for r in rule.get("IpRanges", [])],
        "UserIdGroupPairs": [{"GroupId": p["GroupId"]} for p in rule.get("UserIdGroupPairs", [])],
    }
