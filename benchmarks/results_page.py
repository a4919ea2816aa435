"""The benchmark results page of the docs (docs/benchmarks.md), written by `make bench` from its summary lines.

A table, not prose: the machine, then each goal with its figure and verdict, then the comparisons
that have no goal of their own. Only a full run writes it (`--quick` figures are a smoke test).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GOAL = re.compile(r"^GOAL (?P<name>[^:]+): (?P<value>\S+) \(goal (?P<goal>[^:]+): (?P<verdict>\w+)\)")
PAGE = "docs/benchmarks.md"


def render(lines: Sequence[str], machine: str, int8_kernels: str, when: str, minutes: float) -> str:
    """Markdown for the summary `lines` (GOAL and COMPARE) of one `make bench` on `machine`."""
    goals = [match for line in lines if (match := GOAL.match(line))]
    compares = [line.removeprefix("COMPARE ") for line in lines if line.startswith("COMPARE ")]
    out = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {when} ({minutes:.0f} min); regenerate with `make bench`, do not edit.",
        "",
        "| machine | int8 kernels |",
        "|---|---|",
        f"| {machine.removeprefix('# ')} | {int8_kernels} |",
        "",
        "| benchmark | measured | goal | verdict |",
        "|---|---:|---|---|",
    ]
    out += [f"| {m['name']} | {m['value']} | {m['goal']} | {m['verdict']} |" for m in goals]
    if compares:
        out += ["", "Comparisons without a goal of their own (median of interleaved rounds, spread in brackets):", ""]
        out += ["```text", *compares, "```"]
    return "\n".join(out) + "\n"
