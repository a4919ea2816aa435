"""What AWS would allow the caller, asked before anything is created (iam:SimulatePrincipalPolicy).

The simulator folds in the caller's identity policies, its permissions boundary and, in an
organization, the service control policies. A call it denies outright is refused here with the
action, the resource and why; a call it cannot decide (a condition key it was not given a value
for) is left to AWS. Callers that may not simulate, or that cannot be simulated (the root user,
federated users), skip the check with one log line: it is a courtesy, not a gate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from dogbreed.errors import DogbreedError

log = logging.getLogger(__name__)
REFUSED = ("AccessDenied", "AccessDeniedException")


@dataclass(frozen=True)
class Call:
    """One call a flow will make, with the values of the condition keys our policies test."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)


class DeniedError(DogbreedError):
    """AWS's simulator says the caller may not make a call the flow needs."""


def principal(iam: Any, caller_arn: str) -> str | None:
    """The IAM user or role ARN behind `caller_arn` (from sts:GetCallerIdentity); None when there is none.

    An assumed-role ARN carries the role's name but not its path: the role's own ARN comes from
    iam:GetRole (None when the caller may not read it).
    """
    parts = caller_arn.split(":", 5)
    if len(parts) != 6:
        return None
    partition, account, resource = parts[1], parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if kind == "user":
        return f"arn:{partition}:iam::{account}:user/{rest}"
    if kind == "assumed-role":
        try:
            return str(iam.get_role(RoleName=rest.split("/", 1)[0])["Role"]["Arn"])
        except ClientError as err:
            if err.response["Error"]["Code"] in (*REFUSED, "NoSuchEntity"):
                return None
            raise
    return None  # the root user, federated users: nothing to simulate


def check(iam: Any, caller_arn: str, calls: Sequence[Call], skip: str) -> None:
    """Refuses a call the simulator denies the caller; `skip` says how to go on without the check.

    Raises:
        DeniedError: one line per denied call: action, resource, and whether an explicit Deny
            (a policy or an SCP) or the lack of any Allow decides it.
    """
    source = principal(iam, caller_arn)
    if source is None:
        log.info("preflight: %s cannot be simulated; AWS decides each call when it is made", caller_arn)
        return
    denied = []
    for call in calls:
        try:
            result = _simulate(iam, source, call)
        except ClientError as err:
            if err.response["Error"]["Code"] in REFUSED:
                log.info("preflight: the caller may not use iam:SimulatePrincipalPolicy; permissions not checked")
                return
            raise
        decision = result["EvalDecision"]
        if decision == "allowed" or (decision == "implicitDeny" and result.get("MissingContextValues")):
            continue
        why = "an explicit Deny" if decision == "explicitDeny" else "no policy allows it"
        if result.get("OrganizationsDecisionDetail", {}).get("AllowedByOrganizations") is False:
            why = "a service control policy of the organization denies it"
        elif result.get("PermissionsBoundaryDecisionDetail", {}).get("AllowedByPermissionsBoundary") is False:
            why = "the caller's permissions boundary denies it"
        denied.append(f"AWS would refuse {call.action} on {call.resource} for {source} ({why}); grant it or {skip}")
    if denied:
        raise DeniedError("\n".join(denied))


def _simulate(iam: Any, source: str, call: Call) -> dict[str, Any]:
    entries = [
        {"ContextKeyName": key, "ContextKeyValues": [value], "ContextKeyType": "string"}
        for key, value in sorted(call.context.items())
    ]
    answer = iam.simulate_principal_policy(
        PolicySourceArn=source, ActionNames=[call.action], ResourceArns=[call.resource], ContextEntries=entries
    )
    return dict(answer["EvaluationResults"][0])
