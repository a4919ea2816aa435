"""The checks every flow runs before its first create call: Service Quotas, then what AWS would allow.

`deploy up`, the SageMaker launcher and `ami launch` each describe what they will ask for (the
quotas, `quotas.Need`, and the calls, `simulation.Call`); this runs them in one order with one
opt-out. Skipping is for accounts whose caller may not read quotas: it says so, because AWS then
refuses a shortfall only after roles, bundles or security groups exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dogbreed.aws import quotas, simulation
from dogbreed.aws.quotas import Need
from dogbreed.aws.simulation import Call

log = logging.getLogger(__name__)


def run(quota_client: Any, iam: Any, caller_arn: str, needs: Sequence[Need], calls: Sequence[Call], skip: str) -> None:
    """Quotas first (a shortfall takes days to lift), then the simulated calls.

    `skip` is how this flow's user turns the checks off (e.g. "rerun with --skip-preflight").

    Raises:
        quotas.QuotaError: a quota below what the config asks, or quotas the caller may not read.
        simulation.DeniedError: a call AWS's simulator denies the caller.
    """
    quotas.check(quota_client, needs, skip)
    simulation.check(iam, caller_arn, calls, skip)


def skipped(flag: str) -> None:
    """Says what skipping leaves unchecked."""
    log.warning(
        "preflight skipped (%s): quotas and permissions are not checked; AWS refuses a shortfall only after "
        "resources exist",
        flag,
    )
