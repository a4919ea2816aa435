"""IAM policy checks for tests: parliament's findings, and an evaluator that answers as IAM does.

The evaluator covers what the shipped policies use (Allow/Deny, wildcards, the condition operators
below); an operator it does not know never grants, so a policy that relies on one fails its tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from parliament import analyze_policy_string


def findings(policy: dict[str, Any] | str) -> list[tuple[str, Any]]:
    text = policy if isinstance(policy, str) else json.dumps(policy)
    return [(f.issue, f.detail) for f in analyze_policy_string(text).findings]


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# The condition operators the shipped policies use; an operator missing here never grants.
OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda value, wanted: value == wanted,
    "StringLike": fnmatchcase,
    "ArnEquals": lambda value, wanted: value == wanted,
    "ArnLike": fnmatchcase,
    # Context values here are single: "every value is in the list" is that one value being in it.
    "ForAllValues:StringEquals": lambda value, wanted: value == wanted,
}


def condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, keys in condition.items():
        for key, wanted in keys.items():
            value = context.get(key)
            if operator == "Null":
                if (value is None) != (str(wanted).lower() == "true"):
                    return False
                continue
            if operator not in OPERATORS or value is None:
                return False  # an absent key fails every positive operator
            if not any(OPERATORS[operator](value, w) for w in as_list(wanted)):
                return False
    return True


def allowed(policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None) -> bool:
    """IAM's answer for one identity policy: an explicit Deny wins, then any matching Allow; default deny.

    Actions match case-insensitively and resources case-sensitively, `*` and `?` as wildcards.
    """
    verdicts = set()
    for statement in policy["Statement"]:
        if not any(fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, r) for r in as_list(statement["Resource"])):
            continue
        if condition_holds(statement.get("Condition", {}), context or {}):
            verdicts.add(statement["Effect"])
    return "Allow" in verdicts and "Deny" not in verdicts
