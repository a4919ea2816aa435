"""python -m ami choose: fitting instance types, cheapest first, priced live or from the dated table."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from ami.choose import THROUGHPUT_TABLE, Requirements, default_throughput, options, parse_throughput
from ami.cli import main
from ami.errors import AmiError
from ami.pricing import PriceTable, live_prices


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    """Every AWS endpoint refuses connections, as on a machine without internet."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def table_rows(output: str) -> list[list[str]]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("type "))
    return [line.split() for line in lines[start + 1 :]]


def test_choose_without_network_prints_the_shipped_table_sorted(
    offline: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["choose", "--min-memory-gb", "8", "--no-gpu"]) == 0
    assert "Pricing API unreachable" in caplog.text  # it did try, and fell back
    out = capsys.readouterr().out
    as_of = PriceTable.shipped().as_of
    assert f"on-demand prices: shipped table of {as_of}" in out
    rows = table_rows(out)
    names = [row[0] for row in rows]
    assert {"c6i.xlarge", "c7i.xlarge", "c5.xlarge", "m6i.xlarge"} <= set(names)
    assert "c4.xlarge" not in names  # 7.5 GiB
    assert not any(name.startswith(("g4dn", "g5", "g6", "p3")) for name in names)
    assert all(float(row[2]) >= 8 and row[3] == "-" for row in rows)
    assert all(float(row[4]) > 0 for row in rows)
    # no flags: every row has a run cost from the benchmark-derived images/s, cheapest run first
    costs = [float(row[6]) for row in rows]
    assert costs == sorted(costs) and costs[0] > 0
    assert "head training images/s from the benchmarks of" in out


def test_default_throughput_follows_the_benchmark_table() -> None:
    specs = PriceTable.shipped().specs
    head, as_of = default_throughput(specs, "head")
    full, _ = default_throughput(specs, "full")
    assert as_of == json.loads(THROUGHPUT_TABLE.read_text())["as_of"]
    # per vCPU from the benchmark box: 6.1 images/s fine-tuning, 147 head-only; AMX families 4x
    assert full["c6i.xlarge"] == pytest.approx(6.1 * 4 * 0.5)
    assert full["c7i.2xlarge"] == pytest.approx(6.1 * 8 * 4.0)
    assert head["c6i.xlarge"] / full["c6i.xlarge"] == pytest.approx(147 / 6.1)
    assert not any(name.startswith(("g4dn", "g5", "g6", "p3")) for name in full)  # no GPU benchmark: no guess


def test_measured_throughput_ranks_by_the_cost_of_a_whole_run(
    offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["choose", "--offline", "--min-memory-gb", "7", "--no-gpu", "--epochs", "5", "--images", "6680"]
    measured = ["c4.xlarge=20", "c5.xlarge=30", "c6i.xlarge=36", "c7i.xlarge=42"]
    assert main([*args, *(f"--images-per-second={m}" for m in measured)]) == 0
    rows = table_rows(capsys.readouterr().out)
    order = [row[0] for row in rows]
    assert [name for name in order if name in {m.split("=")[0] for m in measured}] == [
        "c7i.xlarge", "c6i.xlarge", "c5.xlarge", "c4.xlarge"
    ]  # fmt: skip
    costs = [float(row[6]) for row in rows]
    assert costs == sorted(costs)
    c7i = rows[order.index("c7i.xlarge")]
    hours = 6680 * 5 / 42 / 3600
    assert float(c7i[5]) == pytest.approx(hours, abs=0.005)
    assert float(c7i[6]) == pytest.approx(hours * 0.1785, abs=0.0005)
    others = {row[0]: float(row[5]) for row in rows}
    defaults, _ = default_throughput(PriceTable.shipped().specs, "head")
    assert others["m5.xlarge"] == pytest.approx(6680 * 5 / defaults["m5.xlarge"] / 3600, abs=0.005)
    assert main([*args, "--images-per-second", "10"]) == 0  # one number for all replaces every default
    assert {row[5] for row in table_rows(capsys.readouterr().out)} == {f"{6680 * 5 / 10 / 3600:.2f}"}


def test_gpu_and_spot_filters(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["choose", "--offline", "--gpu", "--min-gpu-memory-gb", "20", "--spot", "--region", "eu-west-1"]) == 0
    out = capsys.readouterr().out
    assert "spot: shipped table" in out and "region eu-west-1" in out
    rows = table_rows(out)
    assert {row[0] for row in rows} == {"g5.xlarge", "g5.2xlarge"}  # 24 GiB A10G; g6 is not in the eu-west-1 table
    spot = [float(row[6]) for row in rows]
    assert spot == sorted(spot)


def exit_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code


def test_bad_input_is_refused_with_a_message(offline: None, capsys: pytest.CaptureFixture[str]) -> None:
    # A malformed flag value is bad usage (2, like argparse); a request nothing can meet is an error (1).
    assert exit_status(["choose", "--offline", "--images-per-second", "fast"]) == 2
    assert "expected a number or TYPE=number" in capsys.readouterr().err
    assert exit_status(["choose", "--offline", "--region", "mars-north-1"]) == 1
    assert "no prices for region mars-north-1" in capsys.readouterr().err
    assert exit_status(["choose", "--offline", "--min-memory-gb", "4096"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no instance type in the table fits") and err.count("\n") == 1
    with pytest.raises(AmiError, match="must be positive"):
        parse_throughput(["c6i.xlarge=0"])


def product(instance_type: str, usd: str) -> str:
    """One Pricing API PriceList entry, shaped like AWS's (trimmed)."""
    dimension = {"unit": "Hrs", "pricePerUnit": {"USD": usd}}
    return json.dumps(
        {
            "product": {"attributes": {"instanceType": instance_type}},
            "terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": dimension}}}},
        }
    )


def test_live_prices_replace_the_table_when_aws_answers() -> None:
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(pricing) as prices, Stubber(ec2) as spots:
        for name, usd in (("c6i.xlarge", "0.1600000000"), ("c7i.xlarge", "0.1700000000")):
            prices.add_response("get_products", {"PriceList": [product(name, usd)], "FormatVersion": "aws_v1"})
            history = [
                {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.0700", "InstanceType": name},
                {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.0650", "InstanceType": name},
            ]
            spots.add_response("describe_spot_price_history", {"SpotPriceHistory": history})
        table = live_prices(PriceTable.shipped(), "us-east-1", ["c6i.xlarge", "c7i.xlarge"], pricing, ec2)
    assert table.origin == {"on_demand": "AWS Pricing API, now", "spot": "EC2 spot price history, now"}
    assert table.on_demand["us-east-1"]["c6i.xlarge"] == 0.16
    assert table.spot["us-east-1"]["c7i.xlarge"] == 0.065
    assert table.on_demand["us-east-1"]["m5.xlarge"] == PriceTable.shipped().on_demand["us-east-1"]["m5.xlarge"]
    rows = options(table, "us-east-1", Requirements(min_memory_gib=8, gpu=False), {}, 0, 0, use_spot=False)
    assert rows[0].instance_type == "c6a.xlarge" and rows[1].instance_type == "c6i.xlarge"
