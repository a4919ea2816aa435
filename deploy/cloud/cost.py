"""What one million answers cost on the configured endpoint: `up` and `status` print it.

From two dated tables: `deploy/prices.json` (SageMaker's list prices) and `deploy/throughput.json`
(what `make bench` measured this project's served model answering, per vCPU, by precision). A real-time
endpoint costs its instances' hours: at the autoscaling target each instance answers
`target_invocations` a minute; at saturation, the measured rate per vCPU times its vCPUs. A serverless
endpoint costs the memory it is given for as long as an answer takes (the measured p50).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from deploy.cloud.container import instance_vcpus
from dogbreed.aws.container_images import processor_for

TABLES = Path(__file__).resolve().parents[1]
MILLION = 1_000_000


@cache
def table(name: str) -> dict[str, Any]:
    return json.loads((TABLES / name).read_text())


def per_million(hourly: float, answers_per_second: float) -> float:
    return hourly / (answers_per_second * 3600) * MILLION


def realtime_lines(d: Any, prices: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    hourly = prices["realtime_per_hour"].get(d.instance_type)
    if hourly is None:
        return [f"cost: no price for {d.instance_type} in deploy/prices.json; see the SageMaker pricing page"]
    target = float(d.autoscaling.target_invocations) / 60
    lines = [f"cost: ${per_million(hourly, target):.2f} per 1M answers at the autoscaling target "
             f"({d.autoscaling.target_invocations}/min per instance, {d.instance_type} at ${hourly}/h)"]  # fmt: skip
    vcpus = instance_vcpus(d.instance_type)
    figure = measured["served"].get(str(d.model.precision))
    if processor_for(d.instance_type, d.image.processor) == "gpu" or vcpus is None or figure is None:
        lines.append(f"cost at saturation: no measured {d.model.precision} figure for {d.instance_type}")
        return lines
    rate = figure["rps_per_vcpu"] * vcpus
    lines.append(
        f"cost: ${per_million(hourly, rate):.2f} per 1M answers at saturation ({rate:.1f} answers/s: "
        f"{figure['rps_per_vcpu']} per vCPU x {vcpus}, {d.model.precision}, measured {measured['as_of']} on "
        f"{measured['measured_on'].lstrip('# ')})"
    )
    return lines


def serverless_lines(d: Any, prices: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    figure = measured["served"].get(str(d.model.precision))
    if figure is None:
        return [f"cost: no measured {d.model.precision} figure in deploy/throughput.json"]
    memory_gb = d.serverless.memory_mb / 1024
    seconds = figure["p50_ms"] / 1000
    cost = memory_gb * seconds * prices["serverless_per_gb_second"] * MILLION
    return [f"cost: ${cost:.2f} per 1M answers ({memory_gb:g} GB x {figure['p50_ms']} ms p50 measured "
            f"{measured['as_of']}, at ${prices['serverless_per_gb_second']}/GB-s; idle costs nothing)"]  # fmt: skip


def summary(d: Any) -> list[str]:
    """The cost lines for `deploy` config `d`, with where each figure comes from."""
    prices, measured = table("prices.json"), table("throughput.json")
    lines = serverless_lines(d, prices, measured) if d.serverless.enabled else realtime_lines(d, prices, measured)
    return [*lines, f"prices: {prices['region']} list prices of {prices['as_of']} (deploy/prices.json)"]
