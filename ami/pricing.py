"""Hourly prices: the AWS Pricing API and EC2 spot price history when reachable, else the shipped table.

The Pricing API has endpoints in only a few regions (us-east-1, ap-south-1, eu-central-1) but
answers for every region; the table in prices.json is dated so a fallback says how old it is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

TABLE = Path(__file__).with_name("prices.json")


@dataclass
class PriceTable:
    """Instance specs and hourly prices by region; `origin` says where the prices came from."""

    as_of: str
    specs: dict[str, dict[str, Any]]
    on_demand: dict[str, dict[str, float]]
    spot: dict[str, dict[str, float]]
    origin: dict[str, str] = field(default_factory=dict)

    @classmethod
    def shipped(cls, path: Path = TABLE) -> PriceTable:
        raw = json.loads(path.read_text())
        return cls(raw["as_of"], raw["instance_types"], raw["on_demand"], raw["spot"])

    def regions(self) -> list[str]:
        return sorted(self.on_demand)


def on_demand_price(pricing: Any, region: str, instance_type: str) -> float | None:
    """The Linux shared-tenancy on-demand USD/hour of `instance_type` in `region`, or None if not sold there."""
    filters = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    prices = []
    for page in pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()]
    ):
        for item in page["PriceList"]:
            for term in json.loads(item)["terms"].get("OnDemand", {}).values():
                prices += [float(d["pricePerUnit"]["USD"]) for d in term["priceDimensions"].values()]
    prices = [price for price in prices if price > 0]
    return min(prices) if prices else None


def spot_price(ec2: Any, instance_type: str) -> float | None:
    """The lowest current Linux spot price of `instance_type` across the region's zones, or None."""
    latest: dict[str, float] = {}
    now = dt.datetime.now(dt.timezone.utc)
    for page in ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=[instance_type], ProductDescriptions=["Linux/UNIX"], StartTime=now
    ):
        for entry in page["SpotPriceHistory"]:
            latest.setdefault(entry["AvailabilityZone"], float(entry["SpotPrice"]))
    return min(latest.values()) if latest else None


def live_prices(table: PriceTable, region: str, instance_types: list[str], pricing: Any, ec2: Any | None) -> PriceTable:
    """`table` with this region's prices replaced by live ones; falls back (and says so) when AWS is unreachable."""
    on_demand = dict(table.on_demand.get(region, {}))
    spot = dict(table.spot.get(region, {}))
    origin = {"on_demand": f"shipped table of {table.as_of}", "spot": f"shipped table of {table.as_of} (estimate)"}
    try:
        # All or nothing, so one table never mixes live and shipped prices under one label.
        fetched = {name: on_demand_price(pricing, region, name) for name in instance_types}
        on_demand.update({name: price for name, price in fetched.items() if price is not None})
        origin["on_demand"] = "AWS Pricing API, now"
    except (BotoCoreError, ClientError) as err:
        log.warning("Pricing API unreachable (%s); using the price table of %s", err, table.as_of)
    if ec2 is not None:
        try:
            fetched = {name: spot_price(ec2, name) for name in instance_types}
            spot.update({name: price for name, price in fetched.items() if price is not None})
            origin["spot"] = "EC2 spot price history, now"
        except (BotoCoreError, ClientError) as err:
            log.warning("spot price history unreachable (%s); using the price table of %s", err, table.as_of)
    return PriceTable(
        table.as_of, table.specs, {**table.on_demand, region: on_demand}, {**table.spot, region: spot}, origin
    )
