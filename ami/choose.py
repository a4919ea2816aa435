"""Which instance type: the ones that fit, their hourly price and, with a measured throughput, a run's cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ami.errors import AmiError
from ami.pricing import PriceTable

# dogImages' training split; a run's cost scales with images seen (train images x epochs).
DOGIMAGES_TRAIN_IMAGES = 6680
# Default images/s per family, derived from the project's benchmarks; dated and explained in the file.
THROUGHPUT_TABLE = Path(__file__).with_name("throughput.json")


def default_throughput(
    specs: dict[str, dict[str, Any]], training: str, path: Path = THROUGHPUT_TABLE
) -> tuple[dict[str, float], str]:
    """Images/s per instance type for `training` ("head" or "full") and the date of the benchmark behind it.

    Types whose family the table does not rate (GPUs, so far) get none: no number is made up.
    """
    table = json.loads(path.read_text())
    per_vcpu = table["per_vcpu"][training]
    rates = {}
    for name, spec in specs.items():
        family = table["families"].get(name.split(".")[0])
        if family is not None:
            rates[name] = per_vcpu * spec["vcpus"] * family["factor"]
    return rates, table["as_of"]


@dataclass
class Requirements:
    """What the instance must have; `gpu` None means either kind."""

    min_vcpus: int = 0
    min_memory_gib: float = 0
    gpu: bool | None = None
    min_gpu_memory_gib: float = 0


@dataclass
class Option:
    """One instance type with its prices and, when a throughput is known, the estimated run."""

    instance_type: str
    vcpus: int
    memory_gib: float
    gpu: str
    on_demand: float | None
    spot: float | None
    run_hours: float | None = None
    run_cost: float | None = None


def parse_throughput(values: list[str]) -> dict[str, float]:
    """`["40"]` applies to every type (key "*"); `["c6i.xlarge=40", ...]` gives one type each."""
    throughput: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            images_per_s = float(number)
        except ValueError:
            raise AmiError(
                f"--images-per-second {value!r}: expected a number or TYPE=number, e.g. c6i.xlarge=42.5"
            ) from None
        if images_per_s <= 0:
            raise AmiError(f"--images-per-second {value!r}: images per second must be positive")
        throughput[name or "*"] = images_per_s
    return throughput


def options(
    table: PriceTable,
    region: str,
    needs: Requirements,
    throughput: dict[str, float],
    images: int,
    epochs: int,
    use_spot: bool,
) -> list[Option]:
    """The fitting types, cheapest run first (or cheapest hour when no throughput is known)."""
    if region not in table.on_demand:
        raise AmiError(f"no prices for region {region}; the table has {', '.join(table.regions())}")
    found = []
    for name, spec in table.specs.items():
        has_gpu = spec["gpus"] > 0
        if spec["vcpus"] < needs.min_vcpus or spec["memory_gib"] < needs.min_memory_gib:
            continue
        if needs.gpu is not None and has_gpu != needs.gpu:
            continue
        if spec["gpu_memory_gib"] < needs.min_gpu_memory_gib:
            continue
        on_demand = table.on_demand[region].get(name)
        if on_demand is None:  # not sold in this region
            continue
        option = Option(
            name,
            spec["vcpus"],
            spec["memory_gib"],
            f"{spec['gpus']}x {spec['gpu_model']}" if has_gpu else "-",
            on_demand,
            table.spot.get(region, {}).get(name),
        )
        images_per_s = throughput.get(name, throughput.get("*"))
        if images_per_s is not None:
            option.run_hours = images * epochs / images_per_s / 3600
            hourly = option.spot if use_spot and option.spot is not None else on_demand
            option.run_cost = option.run_hours * hourly
        found.append(option)

    def order(option: Option) -> tuple[float, float, str]:
        hourly = option.spot if use_spot and option.spot is not None else option.on_demand
        run_cost = option.run_cost if option.run_cost is not None else float("inf")
        return (run_cost, hourly or float("inf"), option.instance_type)

    return sorted(found, key=order)


def format_table(rows: list[Option], use_spot: bool) -> str:
    """A plain-text table, one row per option."""
    header = ["type", "vCPU", "mem GiB", "GPU", "on-demand $/h"]
    if use_spot:
        header.append("spot $/h")
    header += ["run h", "run $"]
    lines = [header]
    for row in rows:
        cells = [row.instance_type, str(row.vcpus), f"{row.memory_gib:g}", row.gpu, _money(row.on_demand)]
        if use_spot:
            cells.append(_money(row.spot))
        cells += [
            "-" if row.run_hours is None else f"{row.run_hours:.2f}",
            "-" if row.run_cost is None else f"{row.run_cost:.3f}",
        ]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    padded = ("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines)
    return "\n".join(text.rstrip() for text in padded)


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
